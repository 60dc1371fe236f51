"""DDL for the `directory` keyspace (unsharded) and each `chat` shard; idempotent."""

from __future__ import annotations

import aiomysql

from cluster.settings import Settings
from webapp import db as _db  # noqa: F401  (installs the warning filter)

_TABLE_OPTS = "ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin"

DIRECTORY = [
    f"""CREATE TABLE IF NOT EXISTS teams (
        id VARCHAR(16) PRIMARY KEY, name VARCHAR(255) NOT NULL, domain VARCHAR(64) NOT NULL,
        created BIGINT NOT NULL) {_TABLE_OPTS}""",
    f"""CREATE TABLE IF NOT EXISTS users (
        id VARCHAR(16) PRIMARY KEY, team_id VARCHAR(16) NOT NULL, name VARCHAR(80) NOT NULL,
        real_name VARCHAR(255) NOT NULL DEFAULT '', is_bot TINYINT NOT NULL DEFAULT 0,
        bot_id VARCHAR(16) NULL, created BIGINT NOT NULL,
        UNIQUE KEY team_name (team_id, name)) {_TABLE_OPTS}""",
    f"""CREATE TABLE IF NOT EXISTS tokens (
        token_hash CHAR(64) PRIMARY KEY, user_id VARCHAR(16) NOT NULL,
        team_id VARCHAR(16) NOT NULL, kind VARCHAR(8) NOT NULL, created BIGINT NOT NULL,
        KEY by_user (user_id)) {_TABLE_OPTS}""",
    # channel names are unique per workspace; this unsharded lookup enforces it
    f"""CREATE TABLE IF NOT EXISTS channel_names (
        team_id VARCHAR(16) NOT NULL, name VARCHAR(80) NOT NULL,
        channel_id VARCHAR(16) NOT NULL, PRIMARY KEY (team_id, name)) {_TABLE_OPTS}""",
]

CHAT = [
    f"""CREATE TABLE IF NOT EXISTS channels (
        id VARCHAR(16) PRIMARY KEY, team_id VARCHAR(16) NOT NULL, name VARCHAR(80) NOT NULL,
        is_private TINYINT NOT NULL DEFAULT 0, is_archived TINYINT NOT NULL DEFAULT 0,
        creator VARCHAR(16) NOT NULL, created BIGINT NOT NULL) {_TABLE_OPTS}""",
    f"""CREATE TABLE IF NOT EXISTS channel_members (
        channel_id VARCHAR(16) NOT NULL, user_id VARCHAR(16) NOT NULL, joined BIGINT NOT NULL,
        PRIMARY KEY (channel_id, user_id)) {_TABLE_OPTS}""",
    # one row per stream (channel or a user's personal stream): the seq/ts allocator
    f"""CREATE TABLE IF NOT EXISTS stream_seq (
        stream_id VARCHAR(16) PRIMARY KEY, seq BIGINT NOT NULL,
        last_ts_us BIGINT NOT NULL) {_TABLE_OPTS}""",
    # every event a stream delivered, by seq: channel servers repair gaps from it
    f"""CREATE TABLE IF NOT EXISTS events (
        stream_id VARCHAR(16) NOT NULL, seq BIGINT NOT NULL, ts_us BIGINT NOT NULL,
        payload MEDIUMTEXT NOT NULL, PRIMARY KEY (stream_id, seq)) {_TABLE_OPTS}""",
    f"""CREATE TABLE IF NOT EXISTS messages (
        channel_id VARCHAR(16) NOT NULL, ts_us BIGINT NOT NULL, seq BIGINT NOT NULL,
        user_id VARCHAR(16) NOT NULL, bot_id VARCHAR(16) NULL, text MEDIUMTEXT NOT NULL,
        thread_ts_us BIGINT NULL, client_msg_id VARCHAR(64) NULL,
        PRIMARY KEY (channel_id, ts_us), UNIQUE KEY by_seq (channel_id, seq)) {_TABLE_OPTS}""",
    # lookup vindex: sharded by user_id, so "my channels" is a single-shard read
    f"""CREATE TABLE IF NOT EXISTS user_channels (
        user_id VARCHAR(16) NOT NULL, channel_id VARCHAR(16) NOT NULL,
        PRIMARY KEY (user_id, channel_id)) {_TABLE_OPTS}""",
]

# Changes to tables that already exist in older deployments; each must be idempotent
# (MariaDB's IF NOT EXISTS forms), since every start runs them all again.
DIRECTORY_MIGRATIONS = [
    # Slack's user profile (users.info, users.profile.*); the email is unique per workspace
    # and users.lookupByEmail reads it through that index
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS display_name VARCHAR(80) NOT NULL DEFAULT ''",
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS email VARCHAR(255) NULL",
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS title VARCHAR(255) NOT NULL DEFAULT ''",
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS phone VARCHAR(64) NOT NULL DEFAULT ''",
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS first_name VARCHAR(80) NOT NULL DEFAULT ''",
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS last_name VARCHAR(80) NOT NULL DEFAULT ''",
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS status_text VARCHAR(100) NOT NULL DEFAULT ''",
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS status_emoji VARCHAR(100) NOT NULL DEFAULT ''",
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS status_expiration BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS tz VARCHAR(64) NOT NULL DEFAULT 'UTC'",
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS is_admin TINYINT NOT NULL DEFAULT 0",
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS is_owner TINYINT NOT NULL DEFAULT 0",
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS deleted TINYINT NOT NULL DEFAULT 0",
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS updated BIGINT NOT NULL DEFAULT 0",
    "CREATE UNIQUE INDEX IF NOT EXISTS team_email ON users (team_id, email)",
    f"""CREATE TABLE IF NOT EXISTS user_prefs (
        user_id VARCHAR(16) PRIMARY KEY, prefs MEDIUMTEXT NOT NULL) {_TABLE_OPTS}""",
    f"""CREATE TABLE IF NOT EXISTS usergroups (
        id VARCHAR(16) PRIMARY KEY, team_id VARCHAR(16) NOT NULL, name VARCHAR(255) NOT NULL,
        handle VARCHAR(80) NOT NULL, description VARCHAR(1000) NOT NULL DEFAULT '',
        created_by VARCHAR(16) NOT NULL, updated_by VARCHAR(16) NOT NULL,
        created BIGINT NOT NULL, updated BIGINT NOT NULL, disabled BIGINT NOT NULL DEFAULT 0,
        UNIQUE KEY team_handle (team_id, handle), UNIQUE KEY team_name (team_id, name))
        {_TABLE_OPTS}""",
    f"""CREATE TABLE IF NOT EXISTS usergroup_members (
        usergroup_id VARCHAR(16) NOT NULL, user_id VARCHAR(16) NOT NULL,
        PRIMARY KEY (usergroup_id, user_id)) {_TABLE_OPTS}""",
    # custom emoji: name -> image URL, or "alias:<name>"
    f"""CREATE TABLE IF NOT EXISTS emoji (
        team_id VARCHAR(16) NOT NULL, name VARCHAR(100) NOT NULL, value VARCHAR(1024) NOT NULL,
        PRIMARY KEY (team_id, name)) {_TABLE_OPTS}""",
    # emoji.list's cache_ts: when the workspace's custom emoji last changed
    "ALTER TABLE emoji ADD COLUMN IF NOT EXISTS updated BIGINT NOT NULL DEFAULT 0",
    # users.setPresence away: manual, so it outlives connections (users.getPresence reads it)
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS manual_away TINYINT NOT NULL DEFAULT 0",
    # users.list pages a workspace's users by id
    "CREATE INDEX IF NOT EXISTS team_id ON users (team_id, id)",
    # a usergroup's default channels (Slack's prefs.channels / prefs.groups), as JSON
    "ALTER TABLE usergroups ADD COLUMN IF NOT EXISTS prefs TEXT NULL",
    # DMs and group DMs are found by their member set, so opening one twice (or by another of
    # its members) gives the same id: members_key is the sorted user ids, comma-joined
    f"""CREATE TABLE IF NOT EXISTS dm_index (
        team_id VARCHAR(16) NOT NULL, members_key VARCHAR(200) NOT NULL,
        channel_id VARCHAR(16) NOT NULL, PRIMARY KEY (team_id, members_key)) {_TABLE_OPTS}""",
    # usergroups.disable: who disabled the group (Slack's deleted_by; `disabled` holds when)
    "ALTER TABLE usergroups ADD COLUMN IF NOT EXISTS deleted_by VARCHAR(16) NULL",
    # do-not-disturb snooze (dnd.setSnooze), Unix seconds: a snooze is active while
    # snooze_end lies ahead, so an expired one needs no clean-up; snooze_start is when the
    # running snooze began (teammates see it as the DND window's start)
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS snooze_start BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE users ADD COLUMN IF NOT EXISTS snooze_end BIGINT NOT NULL DEFAULT 0",
]

CHAT_MIGRATIONS = [
    # the channel's seq just before the member joined: RTM resume replays a channel the user
    # joined while away from here (NULL: joined before this column existed; read as 0)
    "ALTER TABLE user_channels ADD COLUMN IF NOT EXISTS joined_at BIGINT NULL",
    # the retention purge deletes the event log by age
    "CREATE INDEX IF NOT EXISTS by_ts ON events (ts_us)",
    # client_msg_id idempotency that survives a webapp killed mid-post and a Redis that lost
    # its keys: a retry finds the committed message (NULL ids are never equal, so posts
    # without one are unaffected). A deployment that already holds duplicates must remove
    # them before this index can be built.
    "CREATE UNIQUE INDEX IF NOT EXISTS by_client_msg ON messages "
    "(channel_id, user_id, client_msg_id)",
    # conversation kinds, topic and purpose (conversations.*); is_general marks #general
    "ALTER TABLE channels ADD COLUMN IF NOT EXISTS is_im TINYINT NOT NULL DEFAULT 0",
    "ALTER TABLE channels ADD COLUMN IF NOT EXISTS is_mpim TINYINT NOT NULL DEFAULT 0",
    "ALTER TABLE channels ADD COLUMN IF NOT EXISTS is_general TINYINT NOT NULL DEFAULT 0",
    "ALTER TABLE channels ADD COLUMN IF NOT EXISTS topic VARCHAR(1000) NOT NULL DEFAULT ''",
    "ALTER TABLE channels ADD COLUMN IF NOT EXISTS topic_creator VARCHAR(16) NOT NULL DEFAULT ''",
    "ALTER TABLE channels ADD COLUMN IF NOT EXISTS topic_last_set BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE channels ADD COLUMN IF NOT EXISTS purpose VARCHAR(1000) NOT NULL DEFAULT ''",
    "ALTER TABLE channels ADD COLUMN IF NOT EXISTS purpose_creator VARCHAR(16) NOT NULL "
    "DEFAULT ''",
    "ALTER TABLE channels ADD COLUMN IF NOT EXISTS purpose_last_set BIGINT NOT NULL DEFAULT 0",
    # Slack's `updated` (ms of the last change) and `previous_names` (JSON list, newest last)
    "ALTER TABLE channels ADD COLUMN IF NOT EXISTS updated BIGINT NOT NULL DEFAULT 0",
    "ALTER TABLE channels ADD COLUMN IF NOT EXISTS previous_names TEXT NULL",
    # conversations.list reads a workspace's channels on each shard
    "CREATE INDEX IF NOT EXISTS by_team ON channels (team_id, id)",
    # per member: read position (conversations.mark) and whether a DM is open in the sidebar
    "ALTER TABLE channel_members ADD COLUMN IF NOT EXISTS last_read_us BIGINT NOT NULL "
    "DEFAULT 0",
    "ALTER TABLE channel_members ADD COLUMN IF NOT EXISTS is_open TINYINT NOT NULL DEFAULT 1",
    # messages: subtype, rich content, edits, threads (replies carry thread_ts_us; a parent
    # keeps its reply summary so history needs no per-message thread query)
    "ALTER TABLE messages ADD COLUMN IF NOT EXISTS subtype VARCHAR(32) NULL",
    "ALTER TABLE messages ADD COLUMN IF NOT EXISTS blocks MEDIUMTEXT NULL",
    "ALTER TABLE messages ADD COLUMN IF NOT EXISTS attachments MEDIUMTEXT NULL",
    "ALTER TABLE messages ADD COLUMN IF NOT EXISTS edited_by VARCHAR(16) NULL",
    "ALTER TABLE messages ADD COLUMN IF NOT EXISTS edited_ts_us BIGINT NULL",
    "ALTER TABLE messages ADD COLUMN IF NOT EXISTS reply_broadcast TINYINT NOT NULL DEFAULT 0",
    "ALTER TABLE messages ADD COLUMN IF NOT EXISTS reply_count INT NOT NULL DEFAULT 0",
    "ALTER TABLE messages ADD COLUMN IF NOT EXISTS reply_users TEXT NULL",
    "ALTER TABLE messages ADD COLUMN IF NOT EXISTS latest_reply_us BIGINT NULL",
    "CREATE INDEX IF NOT EXISTS by_thread ON messages (channel_id, thread_ts_us, ts_us)",
    # a reply names its parent's author (Slack's parent_user_id) without a parent lookup per
    # read; reply_users holds every distinct replier (reply_users_count is its length)
    "ALTER TABLE messages ADD COLUMN IF NOT EXISTS parent_user_id VARCHAR(16) NULL",
    "ALTER TABLE messages MODIFY COLUMN reply_users MEDIUMTEXT NULL",
    # a system message's own fields, as JSON merged into the message object (channel_topic's
    # "topic", channel_name's "old_name" and "name", ...)
    "ALTER TABLE messages ADD COLUMN IF NOT EXISTS extra TEXT NULL",
    # reactions and pins live with their message on the channel's shard. ``created`` is the
    # µs ts of the event that added the row: strictly increasing per channel, so it orders
    # a message's reactions exactly as they came (Slack's first-reaction order)
    f"""CREATE TABLE IF NOT EXISTS reactions (
        channel_id VARCHAR(16) NOT NULL, ts_us BIGINT NOT NULL, name VARCHAR(128) NOT NULL,
        user_id VARCHAR(16) NOT NULL, created BIGINT NOT NULL,
        PRIMARY KEY (channel_id, ts_us, name, user_id)) {_TABLE_OPTS}""",
    # reactions.list: one user's reactions, newest first, read on every shard
    "CREATE INDEX IF NOT EXISTS by_user ON reactions (user_id, created)",
    f"""CREATE TABLE IF NOT EXISTS pins (
        channel_id VARCHAR(16) NOT NULL, ts_us BIGINT NOT NULL, pinned_by VARCHAR(16) NOT NULL,
        created BIGINT NOT NULL, PRIMARY KEY (channel_id, ts_us)) {_TABLE_OPTS}""",
    # pins.list: a channel's pins, newest first
    "CREATE INDEX IF NOT EXISTS by_created ON pins (channel_id, created)",
    # chat.scheduleMessage: a message waiting for post_at, on its channel's shard. Every
    # webapp polls by_post_at for due rows and claims one (claimed_until, µs) before it
    # posts it; a claim whose webapp died runs out and the row is posted by another, with
    # the row's id as client_msg_id so a post that did commit is found, not repeated
    f"""CREATE TABLE IF NOT EXISTS scheduled_messages (
        id VARCHAR(16) PRIMARY KEY, channel_id VARCHAR(16) NOT NULL,
        user_id VARCHAR(16) NOT NULL, post_at BIGINT NOT NULL, date_created BIGINT NOT NULL,
        text MEDIUMTEXT NOT NULL, blocks MEDIUMTEXT NULL, attachments MEDIUMTEXT NULL,
        thread_ts_us BIGINT NULL, reply_broadcast TINYINT NOT NULL DEFAULT 0,
        claimed_until BIGINT NOT NULL DEFAULT 0,
        KEY by_post_at (post_at), KEY by_channel (channel_id, post_at),
        KEY by_user (user_id, post_at, id)) {_TABLE_OPTS}""",
    # search.messages: InnoDB FULLTEXT on the text. Matching follows the column's collation,
    # so the text compares case- and accent-insensitively (storage is unchanged: a collation
    # only orders and compares). The first FULLTEXT index rebuilds the table once.
    "ALTER TABLE messages MODIFY COLUMN text MEDIUMTEXT CHARACTER SET utf8mb4 "
    "COLLATE utf8mb4_unicode_ci NOT NULL",
    "CREATE FULLTEXT INDEX IF NOT EXISTS by_text ON messages (text)",
]


async def ensure_schema(settings: Settings) -> None:
    """Create every database and table that is missing; safe to run again."""
    conn = await aiomysql.connect(
        host=settings.mysql_host, port=settings.mysql_port, user=settings.mysql_user,
        password=settings.mysql_password, autocommit=True, charset="utf8mb4",
    )
    try:
        async with conn.cursor() as cur:
            targets = [(settings.db_name("directory"), DIRECTORY + DIRECTORY_MIGRATIONS)] + [
                (settings.db_name("chat", shard), CHAT + CHAT_MIGRATIONS)
                for shard in settings.chat_shards
            ]
            for db, ddl in targets:
                await cur.execute(
                    f"CREATE DATABASE IF NOT EXISTS `{db}` CHARACTER SET utf8mb4 "
                    "COLLATE utf8mb4_bin"
                )
                await cur.execute(f"USE `{db}`")
                for stmt in ddl:
                    await cur.execute(stmt)
    finally:
        conn.close()


async def drop_all(settings: Settings) -> None:
    """Drop every database of this prefix (tests use throwaway prefixes)."""
    conn = await aiomysql.connect(
        host=settings.mysql_host, port=settings.mysql_port, user=settings.mysql_user,
        password=settings.mysql_password, autocommit=True,
    )
    try:
        async with conn.cursor() as cur:
            dbs = [settings.db_name("directory")] + [
                settings.db_name("chat", s) for s in settings.chat_shards
            ]
            for db in dbs:
                await cur.execute(f"DROP DATABASE IF EXISTS `{db}`")
    finally:
        conn.close()
