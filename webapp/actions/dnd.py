"""Do not disturb: a user's snooze (dnd.setSnooze, dnd.endSnooze, dnd.endDnd) and what
others may read of it (dnd.info, dnd.teamInfo).

The snooze window lives in the directory (the source of truth) and expiry is read, not
written: a snooze whose end has passed is simply not active, so nothing has to wake up to
end it. A change is written first, then announced in two more transactions: the full
status (``dnd_updated``) on the user's personal stream, the teammates' view
(``dnd_updated_user``) on the workspace stream. A setSnooze whose event step failed is
repaired by calling it again (it repeats its events); an end whose event step failed is
not (the snooze is already over, so a repeat has nothing to end): the next change carries
the whole status, and dnd.info is right either way.

Every function takes ``now`` (Unix seconds) so that expiry is tested without waiting.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cluster import ids
from webapp import store
from webapp.actions.users import announce
from webapp.params import ApiError
from webapp.runtime import Runtime
from webapp.slack import events
from webapp.slack.shapes import dnd_status
from webapp.store import directory

# a week: Slack's own clients offer at most "until next week"; a longer "snooze" is really
# leaving, which is what a DND schedule or a status is for
MAX_SNOOZE_MINUTES = 7 * 24 * 60
# dnd.teamInfo reads at most this many users per call
MAX_TEAM_INFO_USERS = 50


def now_s() -> int:
    return ids.now_us() // 1_000_000


def _user_token_only(who: store.Identity) -> None:
    """Snoozing is a person's setting: Slack grants dnd:write to user tokens only."""
    if who.is_bot:
        raise ApiError("not_allowed_token_type")


async def _announce(rt: Runtime, who: store.Identity, window: tuple[int, int],
                    now: int) -> None:
    own = dnd_status(*window, now, own=True)
    seen = dnd_status(*window, now, own=False)
    await announce(rt, who.user_id, lambda ts: events.dnd_updated(who.user_id, own, ts))
    await announce(rt, who.team_id,
                   lambda ts: events.dnd_updated_user(who.user_id, seen, ts))


async def set_snooze(rt: Runtime, who: store.Identity, minutes: int,
                     now: int | None = None) -> dict[str, Any]:
    """Snooze for ``minutes`` from now (already checked: 1..MAX_SNOOZE_MINUTES); Slack's
    setSnooze answer."""
    _user_token_only(who)
    now = now_s() if now is None else now
    window = await directory.set_snooze(rt.db, who.user_id, now, now + minutes * 60)
    await _announce(rt, who, window, now)
    status = dnd_status(*window, now, own=True)
    return {"snooze_enabled": True, "snooze_endtime": status["snooze_endtime"],
            "snooze_remaining": status["snooze_remaining"], "snooze_is_indefinite": False}


async def end_snooze(rt: Runtime, who: store.Identity,
                     now: int | None = None) -> dict[str, Any]:
    """End the running snooze (``snooze_not_active`` when there is none); Slack's
    endSnooze answer, the status as it now stands."""
    _user_token_only(who)
    now = now_s() if now is None else now
    if not await directory.end_snooze(rt.db, who.user_id, now):
        raise ApiError("snooze_not_active")
    await _announce(rt, who, (0, 0), now)
    return dnd_status(0, 0, now, own=True)


async def end_dnd(rt: Runtime, who: store.Identity, now: int | None = None) -> None:
    """End the current DND session. Without schedules that is the running snooze, if any;
    nothing to end is not an error (Slack answers ok) and announces nothing."""
    _user_token_only(who)
    now = now_s() if now is None else now
    if await directory.end_snooze(rt.db, who.user_id, now):
        await _announce(rt, who, (0, 0), now)


async def info(rt: Runtime, who: store.Identity, user_id: str | None,
               now: int | None = None) -> dict[str, Any]:
    """A user's status (the caller's by default); another user's without the snooze
    fields, as Slack shows it. Another workspace's user does not exist."""
    user_id = user_id or who.user_id
    window = await directory.get_snooze(rt.db, who.team_id, user_id)
    if window is None:
        raise ApiError("user_not_found")
    now = now_s() if now is None else now
    return dnd_status(*window, now, own=user_id == who.user_id)


async def own_status(rt: Runtime, who: store.Identity) -> dict[str, Any]:
    """The caller's status for rtm.start's ``dnd`` (a vanished user reads as no DND)."""
    window = await directory.get_snooze(rt.db, who.team_id, who.user_id)
    return dnd_status(*(window or (0, 0)), now_s(), own=True)


async def team_info(rt: Runtime, who: store.Identity, user_ids: Sequence[str],
                    now: int | None = None) -> dict[str, dict[str, Any]]:
    """Teammates' statuses by id, in the order asked; ids that are not users of the
    caller's workspace are left out rather than refused, so a reply never tells whether
    an id exists elsewhere."""
    windows = await directory.team_snoozes(rt.db, who.team_id, user_ids)
    now = now_s() if now is None else now
    return {u: dnd_status(*windows[u], now, own=False) for u in user_ids if u in windows}
