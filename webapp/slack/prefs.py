"""User prefs (users.prefs.get / users.prefs.set, Slack's undocumented client methods): the
defaults every user starts with, and the type each known pref keeps. A user's stored prefs
override these; a pref not listed here is stored as given (a string, number, true/false
or null)."""

from __future__ import annotations

import math
import re
from typing import Any

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,99}$")
MAX_VALUE_LEN = 4000
# names one user may hold beyond the defaults: a bound on what a client can store
MAX_STORED = 500

# the prefs Slack clients read at startup, with Slack's defaults
DEFAULTS: dict[str, Any] = {
    "highlight_words": "", "muted_channels": "", "emoji_mode": "default", "emoji_use": "{}",
    "emoji_autocomplete": True, "graphic_emoticons": False, "convert_emoticons": True,
    "ss_emojis": True, "jumbomoji": True, "time24": False, "display_real_names_override": 0,
    "display_display_names": True, "color_names_in_list": True,
    "mark_msgs_read_immediately": True, "all_channels_loud": False, "push_everything": False,
    "locale": "en-US", "theme": "default", "messages_theme": "default",
    "sidebar_behavior": "", "channel_sort": "default", "show_typing": True,
    "expand_inline_imgs": True, "collapse_inline_imgs": False, "mute_sounds": False,
    "dnd_enabled": False, "email_alerts": "instant", "enter_is_special_in_tbt": False,
    "no_joined_overlays": False, "no_created_overlays": False, "seen_welcome_2": True,
}


def coerce(name: str, value: Any) -> Any:
    """The value to store for ``name``, in the type of its default (a form sends every value
    as a string: "true", "3"); raises ValueError when it does not fit."""
    if isinstance(value, str) and len(value) > MAX_VALUE_LEN:
        raise ValueError(name)
    default = DEFAULTS.get(name)
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "false", "0"):
            return value.lower() in ("true", "1")
        raise ValueError(name)
    if isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and re.fullmatch(r"-?\d{1,9}", value):
            return int(value)
        raise ValueError(name)
    if isinstance(default, str):
        if isinstance(value, str):
            return value
        raise ValueError(name)
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(name)
    if value is None or isinstance(value, str | int | float):
        return value
    raise ValueError(name)
