"""ddfast's file handling in one place: atomic writes (expert buffers, synthetic sets, checkpoints, teachers,
results), ddfast's own ``torch.save`` formats with a payload checksum (:func:`save_checked` /
:func:`load_checked`), ``torch.load`` errors that name the file (:func:`load_torch`).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import warnings

import torch

__all__ = ["atomic_torch_save", "atomic_write_text", "save_checked", "load_checked", "load_torch", "CHECKSUM_KEY"]

CHECKSUM_KEY = "checksum"


def atomic_torch_save(obj, path: str | os.PathLike) -> str:
    """``torch.save(obj)`` to ``path`` atomically (see :func:`_atomic_write`); returns the path as a str."""
    return _atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(path: str | os.PathLike, text: str) -> str:
    """Write ``text`` (UTF-8) to ``path`` atomically (see :func:`_atomic_write`); returns the path."""
    return _atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def _atomic_write(path: str | os.PathLike, write) -> str:
    """Call ``write(binary_file)`` and put the result at ``path`` atomically.

    The data goes to a temporary file ``.<name>.<8 random>.tmp`` in the same folder (created if missing; mode
    0o666 less the umask, like any file the process creates), is flushed and fsynced, then renamed onto ``path``
    with ``os.replace``; on any error the temporary file is removed and an existing ``path`` is left untouched. The
    folder is fsynced afterwards where the platform allows, so the rename survives a crash."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = _create_temporary(folder, os.path.basename(path))
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


def _create_temporary(folder: str, name: str) -> tuple[int, str]:
    """A new file ``folder/.<name>.<8 hex>.tmp`` opened for writing with mode 0o666 (the umask applies)."""
    while True:
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue


# ------------------------------------------------------------------------------------ reading and checksums

def load_torch(path: str | os.PathLike, what: str, safe_globals: tuple = ()):
    """``torch.load(path, weights_only=True)`` onto the CPU. A missing file or a folder raises as usual; anything
    else that stops the load (an empty, truncated or garbage file: EOFError, RuntimeError from the zip reader,
    unpickling errors, OSError) raises ValueError naming the file and ``what`` it should hold."""
    path = os.fspath(path)
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (FileNotFoundError, IsADirectoryError):
        raise
    except Exception as exc:
        size = os.path.getsize(path) if os.path.isfile(path) else None
        raise ValueError(f"could not load {path!r} ({size} bytes) as {what} (torch.load, weights_only=True): "
                         f"{type(exc).__name__}: {exc}; the file is empty, truncated or not such a file") from exc


def payload_checksum(payload: dict) -> str:
    """``"sha256:<hex>"`` of ``payload`` without its checksum entry: every tensor's dtype, shape and bytes and
    every other value (str, int, float, bool, None, nested dicts/lists/tuples) in order."""
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in payload.items() if k != CHECKSUM_KEY})
    return "sha256:" + digest.hexdigest()


def _feed(digest, value) -> None:
    if isinstance(value, torch.Tensor):
        flat = value.detach().cpu().contiguous().reshape(-1)
        digest.update(f"tensor {flat.dtype} {tuple(value.shape)};".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    elif isinstance(value, dict):
        digest.update(f"dict {len(value)};".encode())
        for key, item in value.items():
            _feed(digest, key)
            _feed(digest, item)
    elif isinstance(value, (list, tuple)):
        digest.update(f"{type(value).__name__} {len(value)};".encode())
        for item in value:
            _feed(digest, item)
    elif value is None or isinstance(value, (str, int, float, bool)):
        digest.update(f"{type(value).__name__} {value!r};".encode())
    else:
        raise TypeError(f"cannot checksum a {type(value).__name__} ({value!r}): ddfast files hold tensors and "
                        f"JSON-like values")


def save_checked(payload: dict, path: str | os.PathLike) -> str:
    """Write ``payload`` (a dict of tensors and JSON-like values) to ``path`` atomically with its
    :func:`payload_checksum` under ``"checksum"``, for :func:`load_checked`; returns the path."""
    return atomic_torch_save({**payload, CHECKSUM_KEY: payload_checksum(payload)}, path)


def load_checked(path: str | os.PathLike, what: str, required: tuple[str, ...] = ()) -> dict:
    """The dict :func:`save_checked` wrote to ``path`` (:func:`load_torch`), which must hold the ``required``
    entries; its checksum is verified: a mismatch raises ValueError naming the file, and a file without one
    (written by an older ddfast) loads with a warning."""
    path = os.fspath(path)
    payload = load_torch(path, what)
    if not isinstance(payload, dict) or any(key not in payload for key in required):
        found = sorted(map(str, payload)) if isinstance(payload, dict) else type(payload).__name__
        raise ValueError(f"{path!r} is not {what}: expected a dict with {list(required)}, found {found}")
    recorded = payload.pop(CHECKSUM_KEY, None)
    if recorded is None:
        warnings.warn(f"{path!r} ({what}) has no checksum (written by an older ddfast): loaded without verifying "
                      f"its contents", stacklevel=2)
    elif recorded != payload_checksum(payload):
        raise ValueError(f"{path!r} is corrupted: the checksum of its contents does not match the one recorded when "
                         f"it was written ({what}); restore it from a copy or write it again")
    return payload
