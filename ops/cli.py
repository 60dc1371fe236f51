"""`backchannel` command line."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from functools import partial
from pathlib import Path
from typing import Any

from cluster import settings as settings_mod
from cluster.ring import Ring
from ops import cluster

TRIO_ROLES = ("admin_server", "channel_server", "gateway_server", "presence_server")


def _serve(args: argparse.Namespace) -> int:
    from cluster.service import setup_logging

    settings = settings_mod.load(args.config)
    setup_logging(settings.log_level, args.name)
    addr = Path(args.addr_file) if args.addr_file else None
    if args.role == "webapp":
        from webapp.server import serve

        serve(settings, args.name, args.port, addr)
        return 0
    import trio

    if args.role == "channel_server":
        from channel_server.server import main
        fn = partial(main, settings, args.name, args.port, args.http_port, addr)
    elif args.role == "gateway_server":
        from gateway_server.server import main
        fn = partial(main, settings, args.name, args.port, args.http_port, addr)
    elif args.role == "admin_server":
        from admin_server.server import main
        fn = partial(main, settings, args.name, args.port, addr)
    else:
        from presence_server.server import main
        fn = partial(main, settings, args.name, args.port, addr)

    async def until_signal() -> None:
        from cluster.service import unregister

        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(fn)
                async for _ in signals:
                    # leave the registry before connections close: clients told `goodbye`
                    # reconnect at once and must not be handed this process again
                    with trio.move_on_after(settings.shutdown_grace_s):
                        await unregister(settings, args.role, args.name)
                    nursery.cancel_scope.cancel()
                    break

    trio.run(until_signal)
    return 0


def _run_dir(args: argparse.Namespace) -> Path:
    return Path(args.run_dir) if args.run_dir else cluster.DEFAULT_RUN_DIR


def _print(doc: Any, as_json: bool, text: str) -> None:
    print(json.dumps(doc, indent=2) if as_json else text)


def _up(args: argparse.Namespace) -> int:
    run_dir = _run_dir(args)
    current = cluster.status(run_dir)
    if current and all(p["healthy"] for p in current["processes"]):
        print(f"cluster already running: {current['webapp_url']}")
        return 0
    cluster.stop(run_dir)
    counts = cluster.Counts(channels=args.channels, gateways=args.gateways, admins=args.admins)
    state = cluster.start(settings_mod.load(args.config), run_dir, counts)
    demo = cluster.seed(run_dir, args.demo_users, team_name="Backchannel Demo")
    (run_dir / "demo.json").write_text(json.dumps(demo, indent=2))
    print(f"Backchannel is up: {len(state['processes'])} processes")
    print(f"  base URL : {state['webapp_url']}")
    print(f"  workspace: {demo['team']['name']} ({demo['team']['id']}), #general "
          f"{demo['channels'][0]['id']}")
    for user in demo["users"]:
        print(f"  {user['name']:<16} {user['id']}  {user['token']}")
    print(f"  {demo['bot']['name']:<16} {demo['bot']['id']}  {demo['bot']['token']}")
    print(f"  (saved to {run_dir / 'demo.json'}; stop with `backchannel down`)")
    return 0


def _down(args: argparse.Namespace) -> int:
    stopped = cluster.stop(_run_dir(args))
    print(f"stopped {stopped} processes")
    return 0


def _status(args: argparse.Namespace) -> int:
    doc = cluster.status(_run_dir(args))
    if doc is None:
        _print({"webapp_url": None, "processes": [], "ring": None}, args.json,
               "no cluster running")
        return 1
    lines = [f"webapp_url: {doc['webapp_url']}", f"ring epoch {doc['ring']['epoch']}: "
             f"{', '.join(doc['ring']['members'])}"]
    lines += [f"  {p['name']:<12} {p['role']:<16} pid={p['pid']:<8} "
              f"{'healthy' if p['healthy'] else 'DOWN':<8} {p['address']}"
              for p in doc["processes"]]
    _print(doc, args.json, "\n".join(lines))
    return 0 if all(p["healthy"] for p in doc["processes"]) else 1


def _seed(args: argparse.Namespace) -> int:
    doc = cluster.seed(_run_dir(args), args.users, args.team_name)
    lines = [f"team {doc['team']['id']} ({doc['team']['name']})"]
    lines += [f"  {u['name']:<16} {u['id']}  {u['token']}" for u in doc["users"]]
    lines.append(f"  {doc['bot']['name']:<16} {doc['bot']['id']}  {doc['bot']['token']}")
    _print(doc, args.json, "\n".join(lines))
    return 0


def _ring_show(args: argparse.Namespace) -> int:
    state = cluster.load_state(_run_dir(args))
    settings = settings_mod.load(state["config"] if state else args.config)
    config = cluster.read_ring(settings)
    share: dict[str, int] = dict.fromkeys(config.members, 0)
    if config.members:
        ring = Ring(config)
        samples = 20_000
        for i in range(samples):
            share[ring.owner(f"C{i:09d}")] += 1
    doc = {"epoch": config.epoch, "vnodes": 150,
           "members": [{"name": n, "address": a,
                        "share": round(share[n] / 20_000, 4)} for n, a in
                       sorted(config.members.items())]}
    lines = [f"ring epoch {config.epoch}, 150 vnodes per member"]
    lines += [f"  {m['name']:<12} {m['address']:<28} {m['share']:.1%} of streams"
              for m in doc["members"]]
    _print(doc, args.json, "\n".join(lines))
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="backchannel", description=__doc__)
    p.add_argument("--config", help="settings TOML (default: env BACKCHANNEL_CONFIG)")
    p.add_argument("--run-dir", help="where cluster state lives (default ./.run)")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the local cluster and seed a demo workspace")
    up.add_argument("--channels", type=int, default=3)
    up.add_argument("--gateways", type=int, default=2)
    up.add_argument("--admins", type=int, default=1)
    up.add_argument("--demo-users", type=int, default=3)
    up.set_defaults(fn=_up)
    sub.add_parser("down", help="stop the local cluster").set_defaults(fn=_down)

    st = sub.add_parser("status", help="processes, health and ring")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=_status)

    sd = sub.add_parser("seed", help="create a workspace with N users and a bot")
    sd.add_argument("--users", type=int, default=3)
    sd.add_argument("--team-name")
    sd.add_argument("--json", action="store_true")
    sd.set_defaults(fn=_seed)

    ring = sub.add_parser("ring", help="the consistent-hash ring")
    ring_sub = ring.add_subparsers(dest="ring_command", required=True)
    show = ring_sub.add_parser("show", help="members, epoch and share of streams")
    show.add_argument("--json", action="store_true")
    show.set_defaults(fn=_ring_show)

    serve = sub.add_parser("serve", help="run one service process (used by `up`)")
    serve.add_argument("role", choices=("webapp", *TRIO_ROLES))
    serve.add_argument("--name", required=True)
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--http-port", type=int, default=0)
    serve.add_argument("--addr-file")
    serve.set_defaults(fn=_serve)

    bench = sub.add_parser("bench", help="post->receive latency and post throughput")
    bench.add_argument("--messages", type=int, default=200)
    bench.add_argument("--receivers", type=int, default=1,
                       help="RTM sockets (one user each) that must all receive every post")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(fn=_bench)
    return p


def _bench(args: argparse.Namespace) -> int:
    from ops.bench import run

    doc = run(_run_dir(args), args.messages, args.receivers)
    lines = [f"{k}: {v}" for k, v in doc.items()]
    _print(doc, args.json, "\n".join(lines))
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except cluster.ClusterError as exc:
        print(f"backchannel: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
