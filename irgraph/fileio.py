"""Files users give us and files we write for them: atomic writes, checksums and safe array loading."""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import InputError, IrgraphError


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temp file beside ``path`` and rename it into place, so an
    interrupted write never leaves a half-written file where a good one was."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise IrgraphError(f"cannot write {str(path)!r}: folder {str(parent)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=parent)
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_bytes(path: str | os.PathLike, data: bytes, *, fsync: bool = False) -> None:
    """Write ``data`` to ``path`` atomically. ``fsync``: flush it to disk before the rename, so
    that after a crash the file is either the old one or the complete new one (an index file
    that names other files needs this; a report the user can write again does not)."""
    def write(tmp):
        with open(tmp, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
    atomic_write(path, write)


def write_text(path: str | os.PathLike, text: str, *, fsync: bool = False) -> None:
    """``write_bytes`` of ``text`` in UTF-8."""
    write_bytes(path, text.encode("utf-8"), fsync=fsync)


def save_npz(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    def write(tmp):
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    atomic_write(path, write)


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB chunks (weights can be large)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_arrays(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Arrays from ``.npz`` (by key) or ``.npy`` (one array, key ``""``); pickles are refused."""
    p = Path(path)
    if not p.is_file():
        raise InputError(f"input file {str(p)!r} does not exist")
    try:
        if p.suffix == ".npy":
            return {"": np.load(p, allow_pickle=False)}
        with np.load(p, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                return {"": np.asarray(z)}
            return {k: z[k] for k in z.files}
    except ValueError as e:
        raise InputError(f"cannot read {str(p)!r}: {e} (object arrays/pickles are not accepted)") from None
    except Exception as e:
        raise InputError(f"cannot read {str(p)!r} as .npz/.npy: {e}") from None
