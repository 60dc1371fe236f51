"""SQL only: reads and writes of the data model, one module per area. Every write is a
function of a cursor that :meth:`webapp.db.Database.transact` runs as one single-shard
transaction, and runs again, whole, after a deadlock. Checks of who may do what live in
:mod:`webapp.actions`; shapes in :mod:`webapp.slack`.

The names below are re-exported for callers that want "the store" as one namespace.
"""

from webapp.store.channels import (
    Conflict,
    create_channel,
    get_channel,
    is_member,
    join_channel,
    many_memberships,
    user_channels,
)
from webapp.store.directory import (
    Identity,
    create_team,
    create_user,
    identity_for_token,
    user_exists,
)
from webapp.store.events import events_after, oldest_events, purge_events, stream_heads
from webapp.store.messages import PostRefused, history, post_message
from webapp.store.streams import Posted, append_event, append_locked, lock_stream

__all__ = [
    "Conflict", "Identity", "PostRefused", "Posted", "append_event", "append_locked",
    "create_channel", "create_team", "create_user", "events_after", "get_channel", "history",
    "identity_for_token", "is_member", "join_channel", "lock_stream", "many_memberships",
    "oldest_events", "post_message", "purge_events", "stream_heads", "user_channels",
    "user_exists",
]
