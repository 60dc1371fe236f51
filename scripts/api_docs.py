"""Keep docs/api.md (the compatibility promise) true to the code.

    .venv/bin/python scripts/api_docs.py           # list what is untrue; exit 1 if anything
    .venv/bin/python scripts/api_docs.py --write   # re-sync the method table, then list

The method table is synced from the registry (``webapp.api.load()``): a registered method
listed "not yet" becomes "done" (review it: it may be "partial"), a method listed done or
partial that is no longer registered becomes "not yet", the tier column follows the
registration, a registered method missing from the table is added, and the counts line is
recomputed. RTM events cannot be synced from a registry: the script only reports an event
listed done or partial whose type (or subtype) no emitter names literally, and an event
listed "not yet" that an emitter now names (review it). A message subtype is data of the
stored message, so it only has to be named somewhere in webapp/. tests/test_api_docs.py
runs the same checks.
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "api.md"
STATUSES = ("done", "partial", "not yet")
# where RTM frames are built: the event constructors and Slack shapes (whole files), and
# the frames the gateway builds itself (hello, pong, goodbye, user_typing, error: only the
# `"type": "X"` it writes, not the kinds it merely looks at); client frames are taken by
# the gateway
CONSTRUCTORS = ("webapp/slack/*.py",)
GATEWAY = ("gateway_server/*.py",)
EMITTERS = {"server": CONSTRUCTORS + GATEWAY, "client": GATEWAY}
# a message subtype is data of the stored message: it may be set wherever messages are made
SUBTYPES = ("webapp/**/*.py",)
_BUILT_TYPE = re.compile(r"""["']type["']\s*:\s*(["'][a-z_]+["'])""")
NO_TIER = "—"


@dataclasses.dataclass
class MethodRow:
    name: str
    status: str
    tier: str
    notes: str

    def line(self) -> str:
        return f"| `{self.name}` | {self.status} | {self.tier} | {self.notes} |"


@dataclasses.dataclass
class EventRow:
    type: str
    subtype: str
    sender: str
    status: str
    notes: str


def _cells(line: str) -> list[str]:
    """The cells of a markdown table row; ``\\|`` inside a cell is kept."""
    parts = re.split(r"(?<!\\)\|", line.strip())
    return [p.strip() for p in parts[1:-1]]


def _block(text: str, name: str) -> tuple[int, int]:
    """Character span between ``<!-- name:start -->`` and ``<!-- name:end -->``."""
    start = text.index(f"<!-- {name}:start -->")
    end = text.index(f"<!-- {name}:end -->")
    return start, end


def _rows(text: str, name: str) -> list[list[str]]:
    start, end = _block(text, name)
    rows = []
    for line in text[start:end].splitlines():
        cells = _cells(line) if line.startswith("|") else []
        if cells and cells[0].startswith("`"):  # header and rule rows have no code cell
            rows.append(cells)
    return rows


def _code(cell: str) -> str:
    return cell.strip().strip("`")


def parse_methods(text: str) -> list[MethodRow]:
    return [MethodRow(_code(c[0]), c[1], c[2], c[3]) for c in _rows(text, "methods")]


def parse_events(text: str) -> list[EventRow]:
    return [EventRow(_code(c[0]), _code(c[1]), c[2], c[3], c[4]) for c in _rows(text, "events")]


def registry() -> dict[str, str]:
    """Registered method -> tier as the table writes it."""
    sys.path.insert(0, str(ROOT))
    from webapp import api

    return {name: str(m.tier) for name, m in api.load().items()}


def _read(patterns: tuple[str, ...]) -> str:
    return "\n".join(p.read_text() for pattern in patterns for p in sorted(ROOT.glob(pattern)))


def emitter_source() -> dict[str, str]:
    """sender -> the text in which its frames' types must be named."""
    built = "\n".join(_BUILT_TYPE.findall(_read(GATEWAY)))
    return {"server": _read(CONSTRUCTORS) + "\n" + built, "client": _read(GATEWAY),
            "subtype": _read(SUBTYPES)}


def named(source: str, literal: str) -> bool:
    return f'"{literal}"' in source or f"'{literal}'" in source


def counts_line(rows: list[MethodRow]) -> str:
    n = Counter(r.status for r in rows)
    return (f"**{n['done'] + n['partial']} of {len(rows)} methods answer** "
            f"({n['done']} done, {n['partial']} partial, {n['not yet']} not yet).")


def method_problems(text: str, reg: dict[str, str]) -> list[str]:
    rows = parse_methods(text)
    out = [f"{r.name}: status {r.status!r} is none of {STATUSES}" for r in rows
           if r.status not in STATUSES]
    seen = Counter(r.name for r in rows)
    out += [f"{name}: listed {k} times" for name, k in seen.items() if k > 1]
    listed = {r.name: r for r in rows}
    for name, tier in sorted(reg.items()):
        row = listed.get(name)
        if row is None:
            out.append(f"{name}: registered but not in the table")
        elif row.status == "not yet":
            out.append(f"{name}: registered but listed 'not yet'")
        elif row.tier != tier:
            out.append(f"{name}: tier {row.tier} in the table, {tier} registered")
    for row in rows:
        if row.status in ("done", "partial") and row.name not in reg:
            out.append(f"{row.name}: listed {row.status} but not registered")
        if row.status == "partial" and not row.notes:
            out.append(f"{row.name}: partial, but the notes do not say what is missing")
        if row.status == "not yet" and row.tier != NO_TIER:
            out.append(f"{row.name}: not yet, but has tier {row.tier}")
    start, end = _block(text, "counts")
    if counts_line(rows) not in text[start:end]:
        out.append(f"counts line is stale: should be {counts_line(rows)!r}")
    names = [r.name for r in rows]
    if names != sorted(names, key=str.lower):
        out.append("method table is not in alphabetical order")
    return out


def event_problems(text: str, sources: dict[str, str]) -> list[str]:
    out = []
    for row in parse_events(text):
        what = f"{row.sender} {row.type}" + (f"/{row.subtype}" if row.subtype else "")
        if row.sender not in EMITTERS:
            out.append(f"RTM {what}: sender is none of {tuple(EMITTERS)}")
        elif row.status not in STATUSES:
            out.append(f"RTM {what}: status {row.status!r} is none of {STATUSES}")
        elif row.status != "not yet":
            if not named(sources[row.sender], row.type):
                out.append(f"RTM {what}: listed {row.status} but nothing in "
                           f"{', '.join(EMITTERS[row.sender])} names \"{row.type}\"")
            if row.subtype and not named(sources["subtype"], row.subtype):
                out.append(f"RTM {what}: listed {row.status} but nothing in "
                           f"{', '.join(SUBTYPES)} names \"{row.subtype}\"")
    return out


def event_hints(text: str, sources: dict[str, str]) -> list[str]:
    """Events listed "not yet" that an emitter now names: maybe done (a human decides)."""
    return [f"RTM {r.sender} {r.type}{'/' + r.subtype if r.subtype else ''}: listed not "
            "yet, but an emitter names it" for r in parse_events(text)
            if r.status == "not yet" and r.sender in EMITTERS
            and named(sources["subtype"] if r.subtype else sources[r.sender],
                      r.subtype or r.type)]


def sync(text: str, reg: dict[str, str]) -> tuple[str, list[str]]:
    """The doc with its method table and counts re-synced from the registry."""
    rows = parse_methods(text)
    changes = []
    for row in rows:
        if row.name in reg and row.status == "not yet":
            row.status, row.tier = "done", reg[row.name]
            changes.append(f"{row.name}: not yet -> done (review: partial?)")
        elif row.name in reg and row.tier != reg[row.name]:
            changes.append(f"{row.name}: tier {row.tier} -> {reg[row.name]}")
            row.tier = reg[row.name]
        elif row.name not in reg and row.status != "not yet":
            changes.append(f"{row.name}: {row.status} -> not yet")
            row.status, row.tier = "not yet", NO_TIER
    for name in sorted(set(reg) - {r.name for r in rows}):
        rows.append(MethodRow(name, "done", reg[name], ""))
        changes.append(f"{name}: added as done (write its notes)")
    rows.sort(key=lambda r: r.name.lower())
    start, end = _block(text, "methods")
    head = [ln for ln in text[start:end].splitlines() if ln.startswith("|")][:2]
    table = "\n".join(["<!-- methods:start -->", *head, *(r.line() for r in rows), ""])
    text = text[:start] + table + text[end:]
    start, end = _block(text, "counts")
    text = text[:start] + f"<!-- counts:start -->\n{counts_line(rows)}\n" + text[end:]
    return text, changes


def main(argv: list[str]) -> int:
    text = DOC.read_text()
    reg = registry()
    if "--write" in argv:
        text, changes = sync(text, reg)
        DOC.write_text(text)
        print("\n".join(changes) or "method table already in sync")
    sources = emitter_source()
    problems = method_problems(text, reg) + event_problems(text, sources)
    for hint in event_hints(text, sources):
        print(f"hint: {hint}")
    for problem in problems:
        print(f"problem: {problem}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
