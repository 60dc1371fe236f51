"""search.messages: Slack's query language on InnoDB FULLTEXT, only ever over the
conversations the caller may read.

Which conversations: every public channel of the caller's workspace (member or not,
archived too) and the private channels, DMs and group DMs the caller is a member of. That
set is computed first; every query on a shard is restricted to it.

The query: plain words (all required; ``word*`` for a prefix), "quoted phrases", ``-word``
to exclude, and the modifiers ``in:`` (``#channel``, ``<#C…>``, a DM as ``@user`` or
``<@U…>``), ``from:`` (``@user``, ``<@U…>``, ``me``) and ``before:``/``after:``/``on:``
(``YYYY-MM-DD``, UTC). A word the FULLTEXT index does not hold (shorter than the server's
minimum, or a stopword) is matched by a regular expression instead, within the rows the
indexed words and the filters leave.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from typing import Any

from webapp import store
from webapp.params import ApiError
from webapp.runtime import Runtime
from webapp.slack.shapes import dm_members, search_match_shape
from webapp.store import channels as db_channels
from webapp.store import dms as db_dms
from webapp.store import search as db_search

# Slack's highlight markers (private-use code points) around each matched word
HL_START, HL_END = "\ue000", "\ue001"
# Slack pages search results at most 100 per page, up to page 100
MAX_COUNT = 100
MAX_PAGE = 100

_TOKEN = re.compile(r'(-?)(?:(in|from|before|after|on):)?("([^"]*)"?|\S+)', re.IGNORECASE)
_WORD = re.compile(r"(\w+)(\*?)")
_CHANNEL_LINK = re.compile(r"^<#([CGD][A-Z0-9]{2,20})(?:\|[^>]*)?>$")
_USER_LINK = re.compile(r"^<@([UW][A-Z0-9]{2,20})(?:\|[^>]*)?>$")
_ID = re.compile(r"^[CGDUW][A-Z0-9]{2,20}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")

_rules: db_search.FulltextRules | None = None


@dataclasses.dataclass
class Query:
    """A parsed query: terms (word, is_prefix) and phrases to find, terms to exclude, and
    the modifiers as written."""

    terms: list[tuple[str, bool]] = dataclasses.field(default_factory=list)
    phrases: list[list[str]] = dataclasses.field(default_factory=list)
    excluded: list[list[str]] = dataclasses.field(default_factory=list)  # words or phrases
    in_: list[str] = dataclasses.field(default_factory=list)
    from_: list[str] = dataclasses.field(default_factory=list)
    after_us: int | None = None
    before_us: int | None = None
    empty: bool = False  # a date that cannot match anything


def parse(text: str) -> Query:
    q = Query()
    for minus, key, raw, quoted in _TOKEN.findall(text):
        key = key.lower()
        if key in ("in", "from") and raw:
            (q.in_ if key == "in" else q.from_).append(raw)
        elif key in ("before", "after", "on"):
            _date(q, key, raw)
        elif raw.startswith('"'):
            words = [w.lower() for w, _ in _WORD.findall(quoted)]
            if words and minus:
                q.excluded.append(words)
            elif words:
                q.phrases.append(words)
        else:
            words = [(w.lower(), bool(star)) for w, star in _WORD.findall(raw)]
            if minus:
                q.excluded += [[w] for w, _ in words]
            else:
                q.terms += words
    return q


def _date(q: Query, key: str, raw: str) -> None:
    """before: the day's start; after: the next day's start (Slack's after excludes the
    day named); on: that day. A date that is no date matches nothing."""
    try:
        day = dt.datetime.strptime(raw, "%Y-%m-%d").replace(tzinfo=dt.UTC) \
            if _DATE.match(raw) else None
    except ValueError:
        day = None
    if day is None:
        q.empty = True
        return
    start = int(day.timestamp()) * 1_000_000
    end = start + 86_400_000_000
    if key in ("before", "on"):
        limit = start if key == "before" else end
        q.before_us = limit if q.before_us is None else min(q.before_us, limit)
    if key in ("after", "on"):
        limit = end if key == "after" else start
        q.after_us = limit if q.after_us is None else max(q.after_us, limit)


def _indexed(word: str, rules: db_search.FulltextRules) -> bool:
    return (rules.stopwords is not None and rules.min_len <= len(word) <= rules.max_len
            and word not in rules.stopwords)


def _filter(q: Query, rules: db_search.FulltextRules, users: tuple[str, ...] | None
            ) -> db_search.Filter:
    """The SQL filter of a query: indexed words go to FULLTEXT, the others (and every
    phrase, whose words the index cannot keep in order) to regular expressions."""
    required: list[str] = []
    regexes: list[str] = []
    for word, prefix in q.terms:
        if _indexed(word, rules):
            required.append(f"+{word}{'*' if prefix else ''}")
        else:
            regexes.append(rf"\b{word}" + ("" if prefix else r"\b"))
    for words in q.phrases:
        required += [f"+{w}" for w in words if _indexed(w, rules)]
        regexes.append(_phrase(words))
    return db_search.Filter(
        against=" ".join(dict.fromkeys(required)) or None, regexes=tuple(regexes),
        excluded=tuple(_phrase(words) for words in q.excluded), users=users,
        after_us=q.after_us, before_us=q.before_us)


def _phrase(words: list[str]) -> str:
    """The words in order, as whole words (they are \\w+: nothing to escape)."""
    return r"\b" + r"\W+".join(words) + r"\b"


# --- who may read what ---------------------------------------------------------------------


async def readable(rt: Runtime, who: store.Identity) -> dict[str, dict[str, Any]]:
    """id -> row of every conversation the caller may search: the workspace's public
    channels, and the members-only ones whose membership rows confirm the lookup."""
    rows = {r["id"]: r for r in await db_search.team_public_channels(rt.db, who.team_id)}
    mine = [c for c in await store.user_channels(rt.db, who.user_id) if c not in rows]
    if mine:
        for row in await db_channels.rows_as_member(rt.db, mine, who.user_id):
            if row["team_id"] == who.team_id:
                rows[row["id"]] = row
    return rows


async def _narrow(rt: Runtime, who: store.Identity, rows: dict[str, dict[str, Any]],
                  refs: list[str]) -> list[str]:
    """The readable conversations ``in:`` names (any of them); unknown names match none."""
    users: set[str] = set()
    names: set[str] = set()
    ids: set[str] = set()
    for ref in refs:
        link = _CHANNEL_LINK.match(ref) or _USER_LINK.match(ref)
        value = link.group(1) if link else ref
        if _ID.match(value):
            (users if value[0] in "UW" else ids).add(value)
        elif value.startswith("@"):
            users |= set(await _user_ids(rt, who, [value]))
        else:
            names.add(value.removeprefix("#").lower())
    found = {c for c in ids if c in rows}
    found |= {c for c, r in rows.items() if not r["is_im"] and r["name"] in names}
    found |= {c for c, r in rows.items() if r["is_im"] and users & _others(r, who.user_id)}
    return sorted(found)


def _others(row: dict[str, Any], me: str) -> set[str]:
    members = dm_members(row)
    return set(members) - {me} or {me}


async def _user_ids(rt: Runtime, who: store.Identity, refs: list[str]) -> list[str]:
    """The users ``from:`` names; unknown ones are left out."""
    found: list[str] = []
    names: list[str] = []
    for ref in refs:
        link = _USER_LINK.match(ref)
        value = link.group(1) if link else ref.removeprefix("@")
        if value.lower() == "me":
            found.append(who.user_id)
        elif _ID.match(value) and value[0] in "UW":
            found.append(value)
        else:
            names.append(value.lower())
    by_name = await db_search.user_ids_by_name(rt.db, who.team_id, names)
    return found + list(by_name.values())


# --- the search ----------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Request:
    """A search.messages call: the query, order, and which part of the results."""

    query: str
    by_score: bool
    ascending: bool
    offset: int
    count: int
    highlight: bool


async def search(rt: Runtime, who: store.Identity, req: Request
                 ) -> tuple[int, list[dict[str, Any]]]:
    """(total matches, the matches of the requested part, as Slack shapes them)."""
    if who.is_bot:
        raise ApiError("not_allowed_token_type")
    q = parse(req.query)
    if not (q.terms or q.phrases or q.excluded or q.in_ or q.from_ or q.after_us
            or q.before_us or q.empty):
        raise ApiError("no_query")
    rows = await readable(rt, who)
    channel_ids = await _narrow(rt, who, rows, q.in_) if q.in_ else sorted(rows)
    users = tuple(await _user_ids(rt, who, q.from_)) if q.from_ else None
    if q.empty or users == ():
        return 0, []
    flt = _filter(q, await _fulltext_rules(rt), users)
    total, found = await db_search.find(rt.db, channel_ids, flt, by_score=req.by_score,
                                        ascending=req.ascending, offset=req.offset,
                                        count=req.count)
    return total, await _shapes(rt, who, rows, found, q if req.highlight else None)


async def _fulltext_rules(rt: Runtime) -> db_search.FulltextRules:
    """Read once per process: the server's settings change only with a restart."""
    global _rules
    if _rules is None:
        _rules = await db_search.fulltext_rules(rt.db)
    return _rules


async def _shapes(rt: Runtime, who: store.Identity, channels: dict[str, dict[str, Any]],
                  found: list[dict[str, Any]], q: Query | None) -> list[dict[str, Any]]:
    authors = await db_dms.team_users(rt.db, who.team_id, sorted({r["user_id"] for r in found}))
    out = []
    for row in found:
        author = authors.get(row["user_id"])
        text = _highlight(row["text"], q) if q is not None else row["text"]
        out.append(search_match_shape(row, channels[row["channel_id"]], who.user_id,
                                      author["name"] if author else "", who.team_domain,
                                      text))
    return out


def _highlight(text: str, q: Query) -> str:
    """Slack's markers around each occurrence of a searched word (or phrase)."""
    parts = [rf"\b{re.escape(w)}" + (r"\w*" if prefix else r"\b") for w, prefix in q.terms]
    parts += [r"\b" + r"\W+".join(map(re.escape, words)) + r"\b" for words in q.phrases]
    if not parts:
        return text
    pattern = re.compile("|".join(sorted(parts, key=len, reverse=True)), re.IGNORECASE)
    return pattern.sub(lambda m: HL_START + m.group(0) + HL_END, text)
