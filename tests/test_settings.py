"""cluster/settings.py: defaults < TOML file < BACKCHANNEL_* environment."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cluster import settings as settings_mod
from cluster.settings import Settings, load, to_toml


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "backchannel.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults():
    s = load(env={})
    assert s == Settings()
    assert s.mysql_port == 3306
    assert s.chat_shards == ("-80", "80-")
    assert s.admin_urls == ()
    assert s.gap_wait_s == 0.5
    assert s.client_slow_bytes == 262_144


def test_toml_overrides_defaults(tmp_path):
    path = write(tmp_path, 'mysql_port = 3307\nchat_shards = ["-40", "40-80", "80-c0", "c0-"]\n'
                           'gap_wait_s = 2\nredis_prefix = "x:"\n')
    s = load(path, env={})
    assert s.mysql_port == 3307
    assert s.chat_shards == ("-40", "40-80", "80-c0", "c0-")
    assert s.gap_wait_s == 2.0 and isinstance(s.gap_wait_s, float)
    assert s.redis_prefix == "x:"
    assert s.mysql_host == Settings().mysql_host


def test_config_path_from_env(tmp_path):
    path = write(tmp_path, "mysql_port = 3308\n")
    assert load(env={"BACKCHANNEL_CONFIG": str(path)}).mysql_port == 3308


def test_env_overrides_toml(tmp_path):
    path = write(tmp_path, 'mysql_port = 3307\nlog_level = "DEBUG"\n')
    env = {"BACKCHANNEL_MYSQL_PORT": "3309", "BACKCHANNEL_PRESENCE_TTL_S": "12.5",
           "BACKCHANNEL_MYSQL_HOST": "db.local"}
    s = load(path, env=env)
    assert s.mysql_port == 3309
    assert s.presence_ttl_s == 12.5
    assert s.mysql_host == "db.local"
    assert s.log_level == "DEBUG"  # from TOML, not overridden


def test_env_ignores_unrelated_variables():
    s = load(env={"PATH": "/bin", "BACKCHANNEL": "x", "OTHER_MYSQL_PORT": "1"})
    assert s == Settings()


@pytest.mark.parametrize("raw,expected", [
    ("-80,80-", ("-80", "80-")),
    (" -40 , 40-80,80-c0 ,c0- ", ("-40", "40-80", "80-c0", "c0-")),
    ("-80,,80-,", ("-80", "80-")),
    ("", ()),
    ("-", ("-",)),
])
def test_tuple_fields_from_comma_separated_env(raw, expected):
    assert load(env={"BACKCHANNEL_CHAT_SHARDS": raw}).chat_shards == expected


def test_admin_urls_from_env():
    s = load(env={"BACKCHANNEL_ADMIN_URLS": "http://127.0.0.1:1,http://127.0.0.1:2"})
    assert s.admin_urls == ("http://127.0.0.1:1", "http://127.0.0.1:2")


def test_unknown_toml_key_raises(tmp_path):
    path = write(tmp_path, "mysql_port = 3307\nno_such_setting = 1\n")
    with pytest.raises(ValueError, match="no_such_setting"):
        load(path, env={})


def test_bad_number_in_env_raises_value_error():
    with pytest.raises(ValueError):
        load(env={"BACKCHANNEL_MYSQL_PORT": "not-a-port"})


def test_to_toml_round_trips_defaults(tmp_path):
    s = load(env={})
    path = write(tmp_path, to_toml(s))
    assert load(path, env={}) == s


def test_to_toml_round_trips_non_defaults(tmp_path):
    s = dataclasses.replace(
        Settings(), admin_urls=("http://127.0.0.1:9001", "http://127.0.0.1:9002"),
        chat_shards=("-40", "40-80", "80-c0", "c0-"), internal_secret='se"cr\\et\n',
        gap_wait_s=0.2, mysql_password="pä ss", presence_url="")
    path = write(tmp_path, to_toml(s))
    assert load(path, env={}) == s


def test_to_toml_lists_every_field():
    text = to_toml(Settings())
    for f in dataclasses.fields(Settings):
        assert f"\n{f.name} = " in "\n" + text


str_fields = [f.name for f in dataclasses.fields(Settings) if f.type == "str"]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(str_fields), st.text(max_size=30),
       st.lists(st.text(max_size=10), max_size=3))
def test_to_toml_round_trips_any_string_values(name, value, shards):
    s = dataclasses.replace(Settings(), **{name: value}, chat_shards=tuple(shards))
    with tempfile.TemporaryDirectory() as tmp:
        path = write(Path(tmp), to_toml(s))
        assert load(path, env={}) == s


@pytest.mark.parametrize("value", ["pass😀word", "\x7f", "a\x7fb"])
def test_to_toml_round_trips_non_bmp_and_del(tmp_path, value):
    s = dataclasses.replace(Settings(), mysql_password=value)
    path = write(tmp_path, to_toml(s))
    assert load(path, env={}) == s


def test_db_name_and_shard_slug():
    s = Settings(db_prefix="bc")
    assert s.db_name("directory") == "bc_directory"
    assert s.db_name("chat", "-80") == "bc_chat_x_80"
    assert s.db_name("chat", "80-") == "bc_chat_80_x"
    assert settings_mod.shard_slug("40-80") == "40_80"
