"""Files dunning writes for people (messages, letters, cases): safe names, atomic writes."""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

# File systems refuse names over 255 bytes: a part built from outside values (a customer id, a
# dedupe key) is kept well under, so that a whole name with its date, ids and suffix fits.
NAME_PART_LENGTH = 100


def safe_name(text: str, limit: int = NAME_PART_LENGTH) -> str:
    """`text` as part of a file name: anything but letters, digits, `_`, `.` and `-` is `_`; a
    longer result keeps its start and ends with a hash of the whole text, so it stays unique."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{name[:limit - 17]}_{digest}"


def write_atomically(path: Path, content: bytes, via: Path | None = None) -> None:
    """Write beside `path` (or in the folder `via`, on the same file system), then rename: a
    reader never sees half a file. Processes writing into one folder at once each write in a
    folder of their own: creating files in one folder from two processes costs each about
    twice the system time, the folder's lock contended."""
    tmp = (via or path.parent) / (path.name + ".tmp")
    tmp.write_bytes(content)
    os.replace(tmp, path)
