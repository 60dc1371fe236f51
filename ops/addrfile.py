"""The file a process writes once it listens, so whoever started it learns its address."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def write_addr(path: Path, info: dict[str, Any]) -> None:
    tmp = Path(f"{path}.tmp")
    tmp.write_text(json.dumps({**info, "pid": os.getpid()}))
    os.replace(tmp, path)


def read_addr(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text())
    except (FileNotFoundError, ValueError):
        return None
