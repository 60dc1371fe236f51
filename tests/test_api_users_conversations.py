"""users.conversations through slack_sdk against the running cluster: the conversations a
user is a member of, by type, archived or not, paged; of another user's, only what the
caller may see (public channels, and the rest only where the caller is a member too); bad
inputs answer Slack's exact error codes."""

from __future__ import annotations

from typing import Any

import pytest

from tests.test_api_conversations import create, error_of, raw, web
from tests.test_deadlocks import with_db

ALL = "public_channel,private_channel,mpim,im"


def convs(cluster: Any, caller: dict[str, Any], cursor: str | None = None, **kwargs: Any
          ) -> list[dict[str, Any]]:
    """Every page of users.conversations (from ``cursor``)."""
    out: list[dict[str, Any]] = []
    while True:
        page = web(cluster, caller).users_conversations(cursor=cursor, **kwargs)
        out += page["channels"]
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            return out


def ids_of(channels: list[dict[str, Any]]) -> set[str]:
    return {c["id"] for c in channels}


@pytest.fixture(scope="module")
def team(cluster: Any) -> dict[str, Any]:
    """alice, bob, carol, dave and their conversations: who is in what is in ``made``."""
    ws = cluster.seed(4)
    alice, bob, carol, dave = ws["users"]
    made = {"general": ws["channels"][0]["id"]}
    made["alice_pub"] = create(cluster, alice)["id"]
    made["alice_priv"] = create(cluster, alice, private=True)["id"]
    made["alice_old"] = create(cluster, alice)["id"]
    web(cluster, alice).conversations_archive(channel=made["alice_old"])
    made["bob_pub"] = create(cluster, bob)["id"]
    made["bob_priv"] = create(cluster, bob, private=True)["id"]
    made["shared_priv"] = create(cluster, alice, private=True)["id"]
    web(cluster, alice).conversations_invite(channel=made["shared_priv"], users=bob["id"])
    made["left_priv"] = create(cluster, bob, private=True)["id"]
    web(cluster, bob).conversations_invite(channel=made["left_priv"], users=alice["id"])
    web(cluster, alice).conversations_leave(channel=made["left_priv"])

    def opened(opener: dict[str, Any], *others: dict[str, Any]) -> str:
        return str(web(cluster, opener).conversations_open(
            users=",".join(o["id"] for o in others))["channel"]["id"])

    made["im_alice_bob"] = opened(alice, bob)
    made["im_bob_carol"] = opened(bob, carol)
    made["mpim_with_alice"] = opened(alice, bob, carol)
    made["mpim_without_alice"] = opened(bob, carol, dave)
    return {**ws, "made": made}


def test_own_conversations_by_type(cluster, team):
    alice, bob = team["users"][:2]
    made = team["made"]
    default = convs(cluster, alice)
    # only what alice is in: bob's public channel is in conversations.list, not here
    assert ids_of(default) == {made["general"], made["alice_pub"], made["alice_old"]}
    assert [c["id"] for c in default] == sorted(c["id"] for c in default)
    assert all(c["is_member"] is True and c["is_channel"] is True for c in default)
    assert ids_of(convs(cluster, alice, exclude_archived=True)) == {
        made["general"], made["alice_pub"]}
    private = convs(cluster, alice, types="private_channel")
    assert ids_of(private) == {made["alice_priv"], made["shared_priv"]}
    assert all(c["is_private"] is True and c["is_member"] is True for c in private)
    ims = convs(cluster, alice, types="im")
    assert [(c["id"], c["user"], c["is_im"], c["is_open"], c["is_user_deleted"])
            for c in ims] == [(made["im_alice_bob"], bob["id"], True, True, False)]
    mpims = convs(cluster, alice, types="mpim")
    assert [c["id"] for c in mpims] == [made["mpim_with_alice"]]
    assert mpims[0]["is_mpim"] is True and mpims[0]["num_members"] == 3
    everything = convs(cluster, alice, types=ALL)
    assert ids_of(everything) == {made[k] for k in (
        "general", "alice_pub", "alice_old", "alice_priv", "shared_priv", "im_alice_bob",
        "mpim_with_alice")}
    # naming oneself is the same as naming nobody
    assert convs(cluster, alice, types=ALL, user=alice["id"]) == everything


def test_another_users_conversations_never_leak(cluster, team):
    alice, bob = team["users"][:2]
    made = team["made"]
    seen = convs(cluster, alice, types=ALL, user=bob["id"])
    # bob's public channels, and of the rest only those alice is in as well
    assert ids_of(seen) == {made[k] for k in (
        "general", "bob_pub", "shared_priv", "im_alice_bob", "mpim_with_alice")}
    for hidden in ("bob_priv", "left_priv", "im_bob_carol", "mpim_without_alice"):
        assert made[hidden] not in str(seen), hidden
    by_id = {c["id"]: c for c in seen}
    # is_member is the caller's; a DM's ``user`` is the other member as the caller sees it
    assert by_id[made["bob_pub"]]["is_member"] is False
    assert by_id[made["shared_priv"]]["is_member"] is True
    assert by_id[made["im_alice_bob"]]["user"] == bob["id"]
    assert ids_of(convs(cluster, alice, types="private_channel", user=bob["id"])) == {
        made["shared_priv"]}
    assert convs(cluster, alice, types="im,mpim", user=team["users"][3]["id"]) == []
    # dave shares only a group DM with bob (the one without alice)
    dave = team["users"][3]
    assert ids_of(convs(cluster, dave, types=ALL, user=bob["id"])) == {
        made["general"], made["bob_pub"], made["mpim_without_alice"]}
    # and bob, asking about alice, does not see alice's own private channel
    assert made["alice_priv"] not in ids_of(convs(cluster, bob, types=ALL, user=alice["id"]))


def test_a_leftover_lookup_row_reveals_nothing(cluster):
    """A leave whose second step (the lookup row on the user's shard) failed leaves the row
    behind: the channel's own membership rows still decide what the caller may see."""
    ws = cluster.seed(2)
    alice, bob = ws["users"]
    left = create(cluster, bob, private=True)["id"]
    web(cluster, bob).conversations_invite(channel=left, users=alice["id"])
    web(cluster, alice).conversations_leave(channel=left)
    with_db(cluster, lambda db: db.transact(alice["id"], lambda cur: cur.execute(
        "INSERT INTO user_channels (user_id, channel_id, joined_at) VALUES (%s, %s, 0)",
        (alice["id"], left))))
    assert left not in ids_of(convs(cluster, alice, types=ALL, user=bob["id"]))
    assert left not in ids_of(convs(cluster, alice, types=ALL))


def test_pages_with_a_stable_cursor(cluster):
    ws = cluster.seed(2)
    alice, bob = ws["users"]
    made = {create(cluster, alice)["id"] for _ in range(5)}
    made |= {create(cluster, alice, private=True)["id"] for _ in range(2)}
    create(cluster, bob)  # not alice's: never on her pages
    types = "public_channel,private_channel"
    pages, cursor = [], None
    while True:
        page = web(cluster, alice).users_conversations(types=types, limit=3, cursor=cursor)
        pages.append([c["id"] for c in page["channels"]])
        cursor = page["response_metadata"]["next_cursor"]
        if not cursor:
            break
    flat = [c for p in pages for c in p]
    assert [len(p) for p in pages] == [3, 3, 2]
    assert flat == sorted(flat) and set(flat) == made | {ws["channels"][0]["id"]}
    first = web(cluster, alice).users_conversations(types=types, limit=2)
    rest = convs(cluster, alice, types=types, limit=1000,
                 cursor=first["response_metadata"]["next_cursor"])
    assert [c["id"] for c in first["channels"]] + [c["id"] for c in rest] == flat
    # another user's pages hold only what the caller may see, on every page
    hidden = create(cluster, bob, private=True)["id"]
    seen = convs(cluster, bob, types=types, user=alice["id"], limit=1)
    assert hidden not in ids_of(seen)
    assert ids_of(seen) == {c for c in flat if c.startswith("C")}


def test_bad_inputs(cluster, team):
    alice = team["users"][0]
    elsewhere = cluster.seed(1)
    client = web(cluster, alice)
    assert error_of(client.users_conversations,
                    user=elsewhere["users"][0]["id"]) == "user_not_found"
    assert error_of(client.users_conversations, user="U0NOBODY00") == "user_not_found"
    assert error_of(client.users_conversations, user="nope") == "user_not_found"
    assert error_of(client.users_conversations, types="public_channel,bogus") == "invalid_types"
    assert error_of(client.users_conversations, types=",") == "invalid_types"
    assert error_of(client.users_conversations, cursor="bm9wZQ==") == "invalid_cursor"
    assert error_of(client.users_conversations, cursor="%%%") == "invalid_cursor"
    assert error_of(client.users_conversations,
                    team_id=elsewhere["team"]["id"]) == "team_access_not_granted"
    assert raw(cluster, "users.conversations", alice, limit="many")["error"] == "invalid_limit"
    assert raw(cluster, "users.conversations", alice, limit=True)["error"] == "invalid_limit"
    assert raw(cluster, "users.conversations", alice, types=7)["error"] == "invalid_arguments"
    assert raw(cluster, "users.conversations", alice, user=[alice["id"]])["error"] == \
        "user_not_found"
    assert raw(cluster, "users.conversations", alice, exclude_archived="x")["error"] == \
        "invalid_arguments"
    # another workspace's user is refused before anything is read: no channels in the answer
    assert raw(cluster, "users.conversations", alice, user=elsewhere["users"][0]["id"]) == {
        "ok": False, "error": "user_not_found"}
    # limit is clamped as Slack clamps it; the caller's own team_id is accepted
    page = raw(cluster, "users.conversations", alice, limit=0, team_id=team["team"]["id"])
    assert page["ok"] and len(page["channels"]) == 1
    assert page["response_metadata"]["next_cursor"]
    assert len(raw(cluster, "users.conversations", alice, limit=5000)["channels"]) == 3
    # another workspace's channels never show, whoever is named
    theirs = elsewhere["channels"][0]["id"]
    assert theirs not in ids_of(convs(cluster, alice, types=ALL))
    assert raw(cluster, "users.conversations", {"token": "xoxp-nope"}) == {
        "ok": False, "error": "invalid_auth"}
