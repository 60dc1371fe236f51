"""docs/api.md is the compatibility promise: it must say exactly which methods answer (the
registry, ``webapp.api.load()``), with their tiers, and no RTM event may be promised that no
code builds. Pure: no cluster. The checks live in scripts/api_docs.py, which also re-syncs
the doc (``--write``)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def apidocs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("api_docs", ROOT / "scripts" / "api_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["api_docs"] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def doc() -> str:
    return (ROOT / "docs" / "api.md").read_text()


def test_every_registered_method_is_promised_and_nothing_more(apidocs, doc):
    problems = apidocs.method_problems(doc, apidocs.registry())
    assert not problems, "docs/api.md is out of date (`.venv/bin/python scripts/api_docs.py " \
                         "--write` re-syncs it):\n" + "\n".join(problems)


def test_every_promised_rtm_event_has_an_emitter(apidocs, doc):
    problems = apidocs.event_problems(doc, apidocs.emitter_source())
    assert not problems, "\n".join(problems)


def test_the_doc_lists_what_clients_use(apidocs, doc):
    """The families a real client or SDK calls are all in the table, whatever their status,
    and every client frame of the RTM protocol."""
    names = {r.name for r in apidocs.parse_methods(doc)}
    must = {"api.test", "auth.test", "bots.info", "chat.postMessage", "chat.postEphemeral",
            "chat.update", "chat.delete", "chat.meMessage", "chat.getPermalink",
            "chat.scheduleMessage", "chat.unfurl", "conversations.list",
            "conversations.history", "conversations.replies", "conversations.mark",
            "conversations.open", "dnd.info", "emoji.list", "files.upload",
            "files.completeUploadExternal", "pins.add", "reactions.add", "reminders.add",
            "rtm.connect", "rtm.start", "search.messages", "stars.add", "team.info",
            "usergroups.list", "users.list", "users.prefs.get", "users.profile.set",
            "users.setPresence", "views.open", "apps.connections.open"}
    assert must <= names, sorted(must - names)
    assert len(names) >= 72
    client = {r.type for r in apidocs.parse_events(doc) if r.sender == "client"}
    assert {"ping", "typing", "message", "presence_sub", "presence_query", "tickle"} <= client


# --- the checker itself, on a small doc ---------------------------------------------------

SMALL = """
<!-- counts:start -->
**2 of 3 methods answer** (1 done, 1 partial, 1 not yet).
<!-- counts:end -->
<!-- methods:start -->
| method | status | tier | notes |
|---|---|---|---|
| `a.one` | done | 4 | |
| `b.two` | partial | 2 | no cursor |
| `c.three` | not yet | — | issue 9 |
<!-- methods:end -->
<!-- events:start -->
| type | subtype | sender | status | notes |
|---|---|---|---|---|
| `hello` | | server | done | |
| `message` | `message_changed` | server | done | |
| `ping` | | client | not yet | |
<!-- events:end -->
"""


def test_checker_accepts_a_true_doc(apidocs):
    assert apidocs.method_problems(SMALL, {"a.one": "4", "b.two": "2"}) == []
    sources = {"server": '{"type": "hello"} "message"', "client": "",
               "subtype": '"message_changed"'}
    assert apidocs.event_problems(SMALL, sources) == []


def test_checker_finds_each_kind_of_untruth(apidocs):
    found = apidocs.method_problems(SMALL, {"a.one": "3", "c.three": "2", "d.four": "1"})
    assert "a.one: tier 4 in the table, 3 registered" in found
    assert "b.two: listed partial but not registered" in found
    assert "c.three: registered but listed 'not yet'" in found
    assert "d.four: registered but not in the table" in found
    events = apidocs.event_problems(SMALL, {"server": '"hello" "message_changed"',
                                            "client": "", "subtype": ""})
    assert events == ['RTM server message/message_changed: listed done but nothing in '
                      'webapp/slack/*.py, gateway_server/*.py names "message"',
                      'RTM server message/message_changed: listed done but nothing in '
                      'webapp/**/*.py names "message_changed"']


def test_gateway_counts_only_the_frames_it_builds(apidocs):
    """A kind the gateway merely compares with (JOIN_KINDS) is not an emitter."""
    built = apidocs._BUILT_TYPE.findall('JOIN_KINDS = {"channel_joined"}\n'
                                        'push({"type": "hello", "positions": p})')
    assert built == ['"hello"']


def test_sync_makes_the_doc_true(apidocs):
    reg = {"a.one": "3", "c.three": "2", "d.four": "1"}
    text, changes = apidocs.sync(SMALL, reg)
    assert apidocs.method_problems(text, reg) == []
    rows = {r.name: r for r in apidocs.parse_methods(text)}
    assert (rows["b.two"].status, rows["b.two"].tier) == ("not yet", "—")
    assert (rows["c.three"].status, rows["c.three"].tier) == ("done", "2")
    assert rows["c.three"].notes == "issue 9"  # notes are a human's: kept
    assert rows["d.four"].status == "done"
    assert len(changes) == 4
    assert text.count("| method | status | tier | notes |") == 1
    assert apidocs.parse_events(text) == apidocs.parse_events(SMALL)
