"""`backchannel` command line."""

from __future__ import annotations

import argparse
import json
import signal
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from cluster import settings as settings_mod
from cluster.settings import Settings
from ops import cluster, gatewayops, progress, ringops, views
from ops.errors import UsageError

TRIO_ROLES = ("admin_server", "channel_server", "gateway_server", "presence_server",
              "ring_manager")


def _trio_main(args: argparse.Namespace, settings: Settings,
               addr: Path | None) -> Callable[[], Any]:
    """The role's ``main`` with its arguments bound; imported late so that a process
    loads only its own service."""
    if args.role == "channel_server":
        from channel_server.server import main
        return partial(main, settings, args.name, args.port, args.http_port, addr,
                       standby=args.standby)
    if args.role == "gateway_server":
        from gateway_server.server import main
        return partial(main, settings, args.name, args.port, args.http_port, addr)
    if args.role == "admin_server":
        from admin_server.server import main
        return partial(main, settings, args.name, args.port, addr)
    if args.role == "ring_manager":
        from ring_manager.server import main
        return partial(main, settings, args.name, args.port, addr)
    from presence_server.server import main
    return partial(main, settings, args.name, args.port, addr)


def _serve(args: argparse.Namespace) -> int:
    from cluster.service import settle_heap, setup_logging

    settings = settings_mod.load(args.config)
    setup_logging(settings.log_level, args.name)
    addr = Path(args.addr_file) if args.addr_file else None
    if args.role == "webapp":
        from webapp.server import serve

        serve(settings, args.name, args.port, addr)
        return 0
    import trio

    fn = _trio_main(args, settings, addr)
    settle_heap()

    async def run_then_stop(stop: trio.CancelScope) -> None:
        await fn()
        stop.cancel()  # fn ended on its own (a drained gateway): the process exits, 0

    async def until_signal() -> None:
        from cluster.service import unregister

        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(run_then_stop, nursery.cancel_scope)
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
    # every process up is "running", even with ring problems: those are for `ring`/`status`
    # to show and fix, not a reason to restart the whole cluster
    if current and all(p["healthy"] for p in current["processes"]):
        print(f"cluster already running: {current['webapp_url']}")
        for problem in current["problems"]:
            print(f"  warning: {problem}")
        return 0
    # our own previous processes may hold leases for a moment after they stopped
    own = {p["pid"] for p in current["processes"]} if current else set()
    cluster.stop(run_dir)
    counts = cluster.Counts(channels=args.channels, gateways=args.gateways, admins=args.admins,
                            standby=args.standby_channels, ring_managers=args.ring_managers)
    state = cluster.start(settings_mod.load(args.config), run_dir, counts, own_pids=own)
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
    run_dir = _run_dir(args)
    doc = cluster.status(run_dir)
    if doc is None:
        error = str(cluster.NoCluster(run_dir))
        _print({"error": error, "webapp_url": None, "processes": [], "ring": None,
                "healthy": False, "problems": [error]}, args.json, error)
        return 1
    _print(doc, args.json, views.status_text(doc))
    return 0 if doc["healthy"] else 1


def _seed(args: argparse.Namespace) -> int:
    doc = cluster.seed(_run_dir(args), args.users, args.team_name, args.team)
    lines = [f"team {doc['team']['id']} ({doc['team']['name']})"]
    lines += [f"  {u['name']:<16} {u['id']}  {u['token']}" for u in doc["users"]]
    bot = doc["bot"]
    if bot is not None and "token" in bot:  # a new workspace's bot (an existing one's
        lines.append(f"  {bot['name']:<16} {bot['id']}  {bot['token']}")  # token is hashed)
    _print(doc, args.json, "\n".join(lines))
    return 0


def _ring_show(args: argparse.Namespace) -> int:
    doc = views.ring_doc(views.load_view(_run_dir(args)))
    _print(doc, args.json, views.ring_text(doc))
    return 0


def _ring_options(args: argparse.Namespace) -> ringops.Options:
    return ringops.Options(dry_run=args.dry_run,
                           timeout=getattr(args, "timeout", ringops.DEFAULT_TIMEOUT_S),
                           progress=progress.wanted(args.json))


def _ring_add(args: argparse.Namespace) -> int:
    doc = ringops.add(_run_dir(args), args.name, _ring_options(args))
    _print(doc, args.json, ringops.result_text(doc))
    return 0


def _ring_drain(args: argparse.Namespace) -> int:
    doc = ringops.drain(_run_dir(args), args.name, _ring_options(args))
    _print(doc, args.json, ringops.result_text(doc))
    return 0


def _ring_remove(args: argparse.Namespace) -> int:
    doc = ringops.remove(_run_dir(args), args.name, _ring_options(args))
    _print(doc, args.json, ringops.result_text(doc))
    return 0


def _gateway_drain(args: argparse.Namespace) -> int:
    opts = gatewayops.Options(window=args.window, timeout=args.timeout, force=args.force,
                              progress=progress.wanted(args.json))
    doc = gatewayops.drain(_run_dir(args), args.name, opts)
    _print(doc, args.json, gatewayops.result_text(doc))
    return 0


def _count(minimum: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        value = int(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value
    return parse


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be a positive number of seconds")
    return value


def _window(text: str) -> float:
    value = float(text)
    if not 0 <= value <= gatewayops.MAX_WINDOW_S:
        raise argparse.ArgumentTypeError(f"must be 0 to {gatewayops.MAX_WINDOW_S:g} seconds")
    return value


def _member_name(text: str) -> str:
    if not ringops.NAME_RE.fullmatch(text):
        raise argparse.ArgumentTypeError("letters, digits, '.', '_' and '-' (at most 64)")
    return text


def _ring_parser(sub: Any) -> None:
    ring = sub.add_parser("ring", help="the consistent-hash ring")
    ring_sub = ring.add_subparsers(dest="ring_command", required=True)
    show = ring_sub.add_parser("show", help="members, epoch, share of streams, standbys")
    show.add_argument("--json", action="store_true")
    show.set_defaults(fn=_ring_show)
    ops = (("add", _ring_add, "start a channel server and put it on the ring"),
           ("drain", _ring_drain, "move a member's streams away, then remove and stop it"),
           ("remove", _ring_remove, "remove a (dead) member at once; stop it if it runs"))
    for name, fn, text in ops:
        cmd = ring_sub.add_parser(name, help=text)
        if name == "add":
            cmd.add_argument("--name", type=_member_name, help="default: next free channel-K")
        else:
            cmd.add_argument("name", metavar="NAME", type=_member_name,
                             help="ring slot, or the process serving it")
        cmd.add_argument("--dry-run", action="store_true",
                         help="print how many streams and subscriptions would move; change "
                              "nothing")
        if name != "remove":
            cmd.add_argument("--timeout", type=_seconds, default=ringops.DEFAULT_TIMEOUT_S,
                             help="seconds to wait for each step (default %(default)g)")
        cmd.add_argument("--json", action="store_true")
        cmd.set_defaults(fn=fn)


def _gateway_parser(sub: Any) -> None:
    gateway = sub.add_parser("gateway", help="gateway servers (client RTM sockets)")
    gateway_sub = gateway.add_subparsers(dest="gateway_command", required=True)
    drain = gateway_sub.add_parser(
        "drain", help="say goodbye to a gateway's clients over a window, then stop it")
    drain.add_argument("name", metavar="NAME", type=_member_name,
                       help="a gateway process of the run dir (e.g. gateway-1)")
    drain.add_argument("--window", type=_window, metavar="SECONDS",
                       help="spread the goodbyes over this long (default: the cluster's "
                            "gateway_drain_window_s)")
    drain.add_argument("--timeout", type=_seconds, metavar="SECONDS",
                       help="give up waiting for the process to exit after this long "
                            f"(default: the window + {gatewayops.DEFAULT_EXTRA_S:g})")
    drain.add_argument("--force", action="store_true",
                       help="drain even the last live gateway (its clients cannot reconnect)")
    drain.add_argument("--json", action="store_true")
    drain.set_defaults(fn=_gateway_drain)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="backchannel", description=__doc__)
    p.add_argument("--config", help="settings TOML (default: env BACKCHANNEL_CONFIG)")
    p.add_argument("--run-dir", help="where cluster state lives (default ./.run)")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="start the local cluster and seed a demo workspace")
    up.add_argument("--channels", type=_count(1), default=3)
    up.add_argument("--gateways", type=_count(1), default=2)
    up.add_argument("--admins", type=_count(1), default=1)
    up.add_argument("--standby-channels", type=_count(0), default=0,
                    help="channel servers started but kept off the ring (for the ring manager)")
    up.add_argument("--ring-managers", type=_count(0), default=1)
    up.add_argument("--demo-users", type=_count(1), default=3)
    up.set_defaults(fn=_up)
    sub.add_parser("down", help="stop the local cluster").set_defaults(fn=_down)

    st = sub.add_parser("status", help="processes, health and ring")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=_status)

    sd = sub.add_parser("seed", help="create a workspace with N users and a bot, or add N "
                        "users to an existing one (--team)")
    sd.add_argument("--users", type=int, default=3)
    sd.add_argument("--team-name")
    sd.add_argument("--team", metavar="TEAM_ID",
                    help="add the users to this workspace (they join its #general)")
    sd.add_argument("--json", action="store_true")
    sd.set_defaults(fn=_seed)

    _ring_parser(sub)
    _gateway_parser(sub)

    serve = sub.add_parser("serve", help="run one service process (used by `up`)")
    serve.add_argument("role", choices=("webapp", *TRIO_ROLES))
    serve.add_argument("--name", required=True)
    serve.add_argument("--port", type=int, default=0)
    serve.add_argument("--http-port", type=int, default=0)
    serve.add_argument("--addr-file")
    serve.add_argument("--standby", action="store_true",
                       help="channel_server: offer this process to the ring manager as a "
                            "spare for a dead member (a process `ring add` starts is not one)")
    serve.set_defaults(fn=_serve)

    bench = sub.add_parser("bench", help="post->receive latency and post throughput")
    bench.add_argument("--messages", type=int, default=200)
    bench.add_argument("--receivers", type=int, default=1,
                       help="RTM sockets (one user each) that must all receive every post")
    bench.add_argument("--json", action="store_true")
    bench.set_defaults(fn=_bench)
    _bench_api_parser(bench)

    chaos = sub.add_parser("chaos", help="ring add, drain and kill -9 under load: lost, "
                                         "duplicated, reordered, failover time")
    chaos.add_argument("--kills", type=_count(0), default=10)
    chaos.add_argument("--rate", type=float, default=50.0, help="posts per second")
    chaos.add_argument("--members", type=_count(1), default=20, help="connected RTM users")
    chaos.add_argument("--rooms", type=_count(1), default=10, help="channels posted to")
    chaos.add_argument("--seconds", type=float, default=5.0, help="posting time per phase")
    chaos.add_argument("--json", action="store_true")
    chaos.set_defaults(fn=_chaos)

    rb = sub.add_parser("resume-bench", help="RTM resume: time from a gateway kill -9 until "
                                             "its clients resumed, replay events/s, memory "
                                             "per resumed session")
    rb.add_argument("--clients", type=_count(1), default=100,
                    help="resuming clients on the gateway that is killed")
    rb.add_argument("--away", type=_count(1), default=10_000,
                    help="events posted while the replay client is away")
    rb.add_argument("--rate", type=_positive, default=50.0, help="posts per second during "
                                                                 "the kill")
    rb.add_argument("--concurrency", type=_count(1), default=16,
                    help="posts in flight while posting the --away events")
    rb.add_argument("--gateway", type=_member_name,
                    help="the gateway to kill (default: the first live one)")
    rb.add_argument("--json", action="store_true")
    rb.set_defaults(fn=_resume_bench)
    return p


def _bench(args: argparse.Namespace) -> int:
    from ops.bench import run

    doc = run(_run_dir(args), args.messages, args.receivers)
    lines = [f"{k}: {v}" for k, v in doc.items()]
    _print(doc, args.json, "\n".join(lines))
    return 0


def _bench_api_parser(bench: Any) -> None:
    """`bench api`: a subcommand, so that plain `bench [--messages N]` stays as it was."""
    sub = bench.add_subparsers(dest="bench_command", metavar="{api,fanout}")
    api = sub.add_parser("api", help="conversations.list and users.list in a large "
                                     "workspace: p50/p99/max per page and listing, req/s")
    api.add_argument("--users", type=_count(1), default=5000)
    api.add_argument("--channels", type=_count(0), default=500)
    api.add_argument("--members", type=_count(0), default=10,
                     help="users invited to each channel besides its creator")
    api.add_argument("--clients", type=_count(1), default=8, help="concurrent clients")
    api.add_argument("--rounds", type=_count(1), default=5,
                     help="full listings per client and phase (after one warm-up)")
    api.add_argument("--team", help="measure this existing workspace (add only the clients)")
    api.add_argument("--own-cluster", action="store_true",
                     help="start a throwaway cluster (own database and Redis prefix), "
                          "stop and wipe it afterwards")
    api.add_argument("--json", action="store_true")
    api.set_defaults(fn=_bench_api)
    _bench_fanout_parser(sub)


def _bench_api(args: argparse.Namespace) -> int:
    from ops import apibench

    opts = apibench.Options(users=args.users, channels=args.channels, members=args.members,
                            clients=args.clients, rounds=args.rounds, team=args.team,
                            own_cluster=args.own_cluster, progress=progress.wanted(args.json))
    doc = apibench.run(_run_dir(args), opts, args.config)
    _print(doc, args.json, apibench.text(doc))
    return 0 if apibench.clean(doc) else 1


def _cpus(text: str) -> frozenset[int]:
    from ops.fanoutbench import parse_cpus

    try:
        return parse_cpus(text)
    except ValueError:
        raise argparse.ArgumentTypeError("a cpu list such as 0, 0,2 or 0-3") from None


def _rate(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError("must be 0 (unpaced) or more")
    return value


def _bench_fanout_parser(sub: Any) -> None:
    fan = sub.add_parser("fanout", help="one channel, M connected members, one sender: "
                                        "deliveries/s, latency, lost, CPU per delivery per "
                                        "role, gateway RSS per connection")
    fan.add_argument("--members", type=_count(1), default=1000, help="connected RTM clients")
    fan.add_argument("--rate", type=_rate, default=20.0,
                     help="posts per second (0: unpaced, a few in flight, obeying 429s)")
    fan.add_argument("--messages", type=_count(1), default=200)
    fan.add_argument("--gateways", type=_count(1), default=1,
                     help="gateways of the throwaway cluster (--own-cluster)")
    fan.add_argument("--text-bytes", type=_count(1), default=100)
    fan.add_argument("--pin-cluster", type=_cpus, metavar="CPUS",
                     help="cpus for every cluster process, MariaDB and Redis (default 0 "
                          "when there are 2 cpus or more)")
    fan.add_argument("--pin-clients", type=_cpus, metavar="CPUS",
                     help="cpus for the clients and the sender (default 1)")
    fan.add_argument("--no-pin", action="store_true", help="pin nothing")
    fan.add_argument("--settle", type=_seconds, default=10.0, metavar="SECONDS",
                     help="stop waiting for missing deliveries after this long without one")
    fan.add_argument("--own-cluster", action="store_true",
                     help="start a throwaway cluster (own database and Redis prefix, per-user "
                          "rate limit raised), stop and wipe it afterwards")
    fan.add_argument("--json", action="store_true")
    fan.set_defaults(fn=_bench_fanout)


def _bench_fanout(args: argparse.Namespace) -> int:
    from ops import fanoutbench

    cluster_cpus, client_cpus = None, None
    if not args.no_pin:
        cluster_cpus, client_cpus = fanoutbench.default_pinning() or (None, None)
        cluster_cpus = args.pin_cluster or cluster_cpus
        client_cpus = args.pin_clients or client_cpus
    opts = fanoutbench.Options(members=args.members, rate=args.rate, messages=args.messages,
                               gateways=args.gateways, text_bytes=args.text_bytes,
                               pin_cluster=cluster_cpus, pin_clients=client_cpus,
                               own_cluster=args.own_cluster, settle_s=args.settle)
    doc = fanoutbench.run(_run_dir(args), opts, args.config)
    _print(doc, args.json, fanoutbench.text(doc))
    return 0 if fanoutbench.clean(doc) else 1


def _chaos(args: argparse.Namespace) -> int:
    from ops.chaos import run

    doc = run(_run_dir(args), args.kills, args.rate, args.members, args.rooms, args.seconds)
    _print(doc, args.json, json.dumps(doc, indent=2))
    phases = [doc["rest"], doc["add"], doc["drain"], *doc["kills"]]
    clean = all(p["lost"] == p["duplicated"] == p["reordered"] == 0 for p in phases)
    return 0 if clean else 1


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def _resume_bench(args: argparse.Namespace) -> int:
    from ops import resumebench

    doc = resumebench.run(_run_dir(args), args.clients, args.away, args.rate,
                          args.concurrency, args.gateway)
    _print(doc, args.json, json.dumps(doc, indent=2))
    return 0 if resumebench.clean(doc) else 1


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when done, 1 when the cluster said no (or is missing), 2 for bad usage."""
    args = parser().parse_args(argv)
    try:
        return args.fn(args)
    except UsageError as exc:
        return _fail(args, str(exc), 2)
    except cluster.ClusterError as exc:
        return _fail(args, str(exc))
    except KeyboardInterrupt:
        # `ring add` has taken its half-joined member off the ring again by now
        return _fail(args, "interrupted", 130)


def _fail(args: argparse.Namespace, message: str, code: int = 1) -> int:
    print(f"backchannel: {message}", file=sys.stderr)
    if getattr(args, "json", False):
        print(json.dumps({"error": message}, indent=2))
    return code


if __name__ == "__main__":
    sys.exit(main())
