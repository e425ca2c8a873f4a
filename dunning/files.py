"""Files dunning writes for people (messages, letters, cases): safe names, atomic writes."""

from __future__ import annotations

import os
import re
from pathlib import Path


def safe_name(text: str) -> str:
    """`text` as part of a file name: anything but letters, digits, `_`, `.` and `-` is `_`."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text)


def write_atomically(path: Path, content: bytes) -> None:
    """Write beside `path`, then rename: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)
