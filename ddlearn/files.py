"""Atomic file writes: nothing half-written is ever left where a reader would find it.

Every save in ddlearn (configs, weights, training checkpoints) goes through `atomic_write`: the
data is written to a temporary file in the same folder, flushed to disk, then renamed over the
target with `os.replace`, which is atomic on POSIX and Windows. A crash mid-save leaves the old
file intact.
"""

import os
import tempfile
from pathlib import Path


def atomic_write(path, write_fn) -> Path:
    """Call `write_fn(tmp_path)` to produce the file, then move it to `path` in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write_fn(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def atomic_write_text(path, text: str) -> Path:
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))
