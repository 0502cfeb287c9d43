"""Atomic file writes shared by the savers (expert buffers, synthetic sets, checkpoints)."""

from __future__ import annotations

import contextlib
import os
import tempfile

import torch

__all__ = ["atomic_torch_save", "atomic_write_text"]


def atomic_torch_save(obj, path: str | os.PathLike) -> str:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`_atomic_write`); returns the path as a str."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`_atomic_write`); returns the path."""
    return _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _atomic_write(path: str | os.PathLike, write) -> str:
    """Call ``write(binary_file)`` and put the result at ``path`` atomically.

    The data goes to a temporary file in the same folder (created if missing), is flushed and
    fsynced, then renamed onto ``path`` with ``os.replace``; on any error the temporary file is
    removed and an existing ``path`` is left untouched. The folder is fsynced afterwards where the
    platform allows, so the rename survives a crash."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # make the rename durable where directories can be fsynced
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path
