"""search.messages through slack_sdk against the running cluster: Slack's answer shape,
modifiers (in:, from:, dates), phrases, prefixes, exclusions, short words and stopwords,
sorting and both kinds of paging; never a private channel's or a DM's message to a
non-member, nor another workspace's; user tokens only."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from slack_sdk import WebClient

from tests.conftest import Cluster
from tests.test_api_chat import error_of, new_channel, web

HL_START, HL_END = "\ue000", "\ue001"


@dataclasses.dataclass
class World:
    cluster: Cluster
    team: str
    word: str  # a word found in many messages, unique to this module's workspace
    a: dict[str, Any]  # in every conversation below
    b: dict[str, Any]  # #general only
    c: dict[str, Any]  # #general and the DM with a
    bot: dict[str, Any]
    general: str
    pub: str  # public, a only
    priv: str  # private, a only
    dm: str  # a and c
    other: dict[str, Any]  # another workspace, whose messages carry the same word
    ts: dict[str, str] = dataclasses.field(default_factory=dict)  # label -> ts

    def as_(self, who: str) -> WebClient:
        return web(self.cluster, getattr(self, who)["token"])

    def search(self, who: str, query: str, **kwargs: Any) -> dict[str, Any]:
        return self.as_(who).search_messages(query=query, **kwargs)["messages"]

    def found(self, who: str, query: str, **kwargs: Any) -> set[str]:
        """The labels of the messages a search returns (all on one page)."""
        labels = {ts: label for label, ts in self.ts.items()}
        matches = self.search(who, query, count=100, **kwargs)["matches"]
        return {labels.get(m["ts"], m["ts"]) for m in matches}


@pytest.fixture(scope="module")
def w(cluster: Cluster) -> Iterator[World]:
    seeded = cluster.seed(3)
    a, b, c = seeded["users"]
    other = cluster.seed(1)
    word = "quokka" + secrets.token_hex(3)
    world = World(cluster, seeded["team"]["id"], word, a, b, c, seeded["bot"],
                  seeded["channels"][0]["id"], new_channel(cluster, a["token"]),
                  new_channel(cluster, a["token"], private=True), "", other)
    posts = [
        ("gen-a", "a", world.general, f"The {word} jumped over the fence"),
        ("gen-b", "b", world.general, f"{word.upper()} sightings are rare"),
        ("pub-a", "a", world.pub, f"{word} in the public annex"),
        ("priv-a", "a", world.priv, f"secret {word} plans"),
        ("short", "b", world.general, f"ok go {word}"),
        ("plain", "c", world.general, "nothing to see here, ok"),
    ]
    for label, who, channel, text in posts:
        world.ts[label] = world.as_(who).chat_postMessage(channel=channel, text=text)["ts"]
    dm = world.as_("c").chat_postMessage(channel=a["id"], text=f"{word} between us")
    world.dm, world.ts["dm-c"] = dm["channel"], dm["ts"]
    world.ts["reply-a"] = world.as_("a").chat_postMessage(
        channel=world.general, text=f"{word} reply in a thread",
        thread_ts=world.ts["gen-b"])["ts"]
    web(cluster, other["users"][0]["token"]).chat_postMessage(
        channel=other["channels"][0]["id"], text=f"{word} from elsewhere")
    yield world


# --- visibility ------------------------------------------------------------------------------


def test_a_member_finds_public_private_dm_and_thread_messages(w: World) -> None:
    assert w.found("a", w.word) == {"gen-a", "gen-b", "pub-a", "priv-a", "short", "dm-c",
                                    "reply-a"}


def test_non_members_find_public_channels_only(w: World) -> None:
    # b is in #general only: the public channel it is not in counts, the private channel
    # and the DM do not; c also sees its DM
    assert w.found("b", w.word) == {"gen-a", "gen-b", "pub-a", "short", "reply-a"}
    assert w.found("c", w.word) == {"gen-a", "gen-b", "pub-a", "short", "reply-a", "dm-c"}


def test_another_workspace_finds_only_its_own(w: World) -> None:
    client = web(w.cluster, w.other["users"][0]["token"])
    matches = client.search_messages(query=w.word)["messages"]["matches"]
    assert [m["text"] for m in matches] == [f"{w.word} from elsewhere"]
    assert matches[0]["team"] == w.other["team"]["id"]


def test_private_names_do_not_leak_through_in(w: World) -> None:
    priv_name = w.as_("a").conversations_info(channel=w.priv)["channel"]["name"]
    assert w.found("b", f"{w.word} in:#{priv_name}") == set()
    assert w.found("b", f"{w.word} in:<#{w.priv}>") == set()
    assert w.found("b", f"{w.word} in:<@{w.c['id']}>") == set()


# --- the answer ------------------------------------------------------------------------------


def test_match_shape_and_paging_objects(w: World) -> None:
    domain = w.as_("a").auth_test()["url"].removeprefix("https://").split(".")[0]
    reply = w.as_("b").search_messages(query=f"{w.word} in:#general from:@{w.a['name']}")
    assert reply["query"] == f"{w.word} in:#general from:@{w.a['name']}"
    messages = reply["messages"]
    assert messages["total"] == 2
    assert messages["paging"] == {"count": 20, "total": 2, "page": 1, "pages": 1}
    assert messages["pagination"] == {"total_count": 2, "page": 1, "per_page": 20,
                                      "page_count": 1, "first": 1, "last": 2}
    by_ts = {m["ts"]: m for m in messages["matches"]}
    top, reply_match = by_ts[w.ts["gen-a"]], by_ts[w.ts["reply-a"]]
    assert top["type"] == "message" and top["user"] == w.a["id"]
    assert top["username"] == w.a["name"] and top["team"] == w.team
    assert top["text"] == f"The {w.word} jumped over the fence"
    assert top["channel"]["id"] == w.general and top["channel"]["name"] == "general"
    assert top["channel"]["is_private"] is False and top["channel"]["is_channel"] is True
    assert top["permalink"] == (f"https://{domain}.backchannel.local/archives/{w.general}/p"
                                + top["ts"].replace(".", ""))
    assert reply_match["permalink"].endswith(f"?thread_ts={w.ts['gen-b']}&cid={w.general}")
    assert top["iid"] and top["iid"] != reply_match["iid"]
    again = w.as_("b").search_messages(query=f"{w.word} in:#general from:@{w.a['name']}")
    assert {m["iid"] for m in again["messages"]["matches"]} == {top["iid"], reply_match["iid"]}


def test_dm_and_private_channel_shapes(w: World) -> None:
    matches = {m["ts"]: m for m in w.search("a", w.word, count=100)["matches"]}
    dm = matches[w.ts["dm-c"]]["channel"]
    assert dm["id"] == w.dm and dm["is_im"] is True and dm["is_private"] is True
    assert dm["name"] == w.c["id"]  # Slack names a DM by the other member
    priv = matches[w.ts["priv-a"]]["channel"]
    assert priv["is_private"] is True and priv["is_group"] is True and not priv["is_channel"]


# --- the query language ----------------------------------------------------------------------


def test_in_and_from_modifiers(w: World) -> None:
    pub_name = w.as_("a").conversations_info(channel=w.pub)["channel"]["name"]
    assert w.found("b", f"{w.word} in:#general") == {"gen-a", "gen-b", "short", "reply-a"}
    assert w.found("b", f"{w.word} in:general") == {"gen-a", "gen-b", "short", "reply-a"}
    assert w.found("b", f"{w.word} in:#{pub_name}") == {"pub-a"}
    assert w.found("b", f"{w.word} in:<#{w.pub}|{pub_name}>") == {"pub-a"}
    assert w.found("a", f"{w.word} in:<@{w.c['id']}>") == {"dm-c"}
    assert w.found("a", f"{w.word} in:@{w.c['name']}") == {"dm-c"}
    assert w.found("c", f"{w.word} in:<@{w.a['id']}>") == {"dm-c"}
    assert w.found("b", f"{w.word} in:#general in:#{pub_name}") == {
        "gen-a", "gen-b", "short", "reply-a", "pub-a"}
    assert w.found("b", f"{w.word} from:<@{w.b['id']}>") == {"gen-b", "short"}
    assert w.found("b", f"{w.word} from:@{w.b['name']}") == {"gen-b", "short"}
    assert w.found("b", f"{w.word} from:me") == {"gen-b", "short"}
    assert w.found("b", f"from:<@{w.c['id']}>") == {"plain"}  # a modifier alone is a query
    assert w.found("b", f"{w.word} in:#no-such-channel") == set()
    assert w.found("b", f"{w.word} from:@nobody-here") == set()


def test_words_are_all_required_case_insensitive_with_prefixes(w: World) -> None:
    assert w.found("a", f"{w.word.upper()} FENCE") == {"gen-a"}
    assert w.found("a", f"{w.word[:-2]}*") == {"gen-a", "gen-b", "pub-a", "priv-a", "short",
                                               "dm-c", "reply-a"}
    assert w.found("a", f"{w.word} zzzunseen") == set()


def test_phrases_and_exclusions(w: World) -> None:
    assert w.found("a", f'"secret {w.word}"') == {"priv-a"}
    assert w.found("a", f'"{w.word} secret"') == set()
    assert w.found("b", f"{w.word} -fence -thread") == {"gen-b", "pub-a", "short"}
    assert w.found("b", f'{w.word} -"public annex"') == {"gen-a", "gen-b", "short", "reply-a"}


def test_short_words_and_stopwords_are_found(w: World) -> None:
    # "ok" is below InnoDB's minimum token size and "the" a stopword: neither is indexed
    assert w.found("b", "ok") == {"short", "plain"}
    assert w.found("b", f"ok {w.word}") == {"short"}
    assert w.found("b", f"the {w.word}") == {"gen-a", "pub-a"}
    assert w.found("b", "go*") == {"short"}


def test_date_modifiers(w: World) -> None:
    assert w.found("b", f"{w.word} after:2000-01-01") == w.found("b", w.word)
    assert w.found("b", f"{w.word} before:2000-01-01") == set()
    assert w.found("b", f"{w.word} on:2000-01-01") == set()
    assert w.found("b", f"{w.word} before:not-a-date") == set()


def test_edits_and_deletes_are_reflected(w: World) -> None:
    marker = "walrus" + secrets.token_hex(3)
    ts = w.as_("b").chat_postMessage(channel=w.general, text=f"{marker} first")["ts"]
    assert [m["ts"] for m in w.search("b", marker)["matches"]] == [ts]
    w.as_("b").chat_update(channel=w.general, ts=ts, text="rewritten entirely")
    assert w.search("b", marker)["matches"] == []
    assert [m["ts"] for m in w.search("b", "rewritten entirely")["matches"]] == [ts]
    w.as_("b").chat_delete(channel=w.general, ts=ts)
    assert w.search("b", "rewritten entirely")["total"] == 0


def test_highlight_marks_matched_words(w: World) -> None:
    (match,) = w.search("a", f"{w.word} fence", highlight=True)["matches"]
    assert match["text"] == (f"The {HL_START}{w.word}{HL_END} jumped over the "
                             f"{HL_START}fence{HL_END}")


# --- order and paging ------------------------------------------------------------------------


def test_sort_by_timestamp_both_ways(w: World) -> None:
    newest_first = [m["ts"] for m in w.search("a", w.word, sort="timestamp")["matches"]]
    assert newest_first == sorted(newest_first, reverse=True) and len(newest_first) == 7
    oldest_first = [m["ts"] for m in w.search("a", w.word, sort="timestamp",
                                              sort_dir="asc")["matches"]]
    assert oldest_first == list(reversed(newest_first))
    by_score = [m["ts"] for m in w.search("a", w.word)["matches"]]
    assert sorted(by_score) == sorted(newest_first)


def test_page_and_count(w: World) -> None:
    everything = [m["ts"] for m in w.search("a", w.word, sort="timestamp")["matches"]]
    seen = []
    for page in (1, 2, 3, 4):
        part = w.search("a", w.word, sort="timestamp", count=2, page=page)
        assert part["paging"] == {"count": 2, "total": 7, "page": page, "pages": 4}
        assert part["pagination"]["first"] == 2 * page - 1
        assert part["pagination"]["last"] == min(2 * page, 7)
        seen += [m["ts"] for m in part["matches"]]
    assert seen == everything


def test_cursor_paging(w: World) -> None:
    everything = [m["ts"] for m in w.search("a", w.word, sort="timestamp")["matches"]]
    seen, cursor = [], "*"
    while cursor:
        reply = w.as_("a").search_messages(query=w.word, sort="timestamp", count=3,
                                           cursor=cursor)
        seen += [m["ts"] for m in reply["messages"]["matches"]]
        cursor = reply["response_metadata"]["next_cursor"]
    assert seen == everything


# --- refusals --------------------------------------------------------------------------------


def test_refusals(w: World) -> None:
    bot = web(w.cluster, w.bot["token"])
    for expected, call in [
        ("not_allowed_token_type", lambda: bot.search_messages(query=w.word)),
        ("not_allowed_token_type", lambda: bot.api_call("search.messages", json={})),
        ("no_query", lambda: w.as_("a").api_call("search.messages", json={})),
        ("no_query", lambda: w.as_("a").search_messages(query="")),
        ("no_query", lambda: w.as_("a").search_messages(query="  !? ")),
        ("invalid_arguments", lambda: w.as_("a").api_call(
            "search.messages", json={"query": ["x"]})),
        ("invalid_arguments", lambda: w.as_("a").search_messages(query=w.word,
                                                                 sort="loudest")),
        ("invalid_arguments", lambda: w.as_("a").search_messages(query=w.word,
                                                                 sort_dir="up")),
        ("invalid_arguments", lambda: w.as_("a").search_messages(query=w.word, count="many")),
        ("invalid_arguments", lambda: w.as_("a").search_messages(query=w.word, page="two")),
        ("invalid_cursor", lambda: w.as_("a").search_messages(query=w.word, cursor="zzz")),
    ]:
        assert error_of(call) == expected
