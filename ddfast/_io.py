"""ddfast's file handling in one place: atomic writes (expert buffers, synthetic sets, checkpoints, teachers,
results), ddfast's own ``torch.save`` formats with a payload checksum (:func:`save_checked` /
:func:`load_checked`), ``torch.load`` errors that name the file (:func:`load_torch`), and the lock a run holds on
its folder (:func:`run_folder`)."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import signal
import socket
import time
import warnings
from pathlib import Path

import torch

__all__ = ["atomic_torch_save", "atomic_write_text", "save_checked", "load_checked", "load_torch", "run_folder",
           "LOCK_NAME", "CHECKSUM_KEY"]

CHECKSUM_KEY = "checksum"
LOCK_NAME = ".ddfast.lock"
KILL_ENV = "DDFAST_TEST_KILL_BEFORE_RENAME"  # tests only: "NAME" or "NAME:N" SIGKILLs this process before the
# rename of the N-th (default first) atomic write of a file called NAME, leaving its temporary file behind
_TEMPORARY = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")  # what _atomic_write (and mkstemp before it) names temporaries
_renames: dict[str, int] = {}  # atomic writes per file name in this process, for KILL_ENV


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
    folder is fsynced afterwards where the platform allows, so the rename survives a crash. A temporary file that a
    killed process left behind is removed by the next run on that folder (:func:`run_folder`)."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = _create_temporary(folder, os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        _test_kill_point(os.path.basename(path))
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


def _test_kill_point(name: str) -> None:
    target = os.environ.get(KILL_ENV)
    if not target:
        return
    wanted, _, count = target.partition(":")
    if wanted == name:
        _renames[name] = _renames.get(name, 0) + 1
        if _renames[name] == int(count or 1):
            os.kill(os.getpid(), signal.SIGKILL)


def remove_orphan_temporaries(folder: str | os.PathLike) -> list[str]:
    """Delete the temporary files that writes into ``folder`` left behind when their process was killed
    (:func:`_atomic_write`'s names); returns their names. Only safe while no other process writes there."""
    removed = []
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False) and _TEMPORARY.fullmatch(entry.name):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
                removed.append(entry.name)
    return sorted(removed)


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
        digest.update(flat.view(torch.uint8).numpy())  # the buffer itself, not a copy
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


# ------------------------------------------------------------------------------------ run folders

@contextlib.contextmanager
def run_folder(path: str | os.PathLike, *, force: bool = False, flag: str = "--out"):
    """Hold an exclusive lock on the run folder ``path`` while the block runs; yields the folder as a Path.

    The folder is created if missing and must be writable: the lock file ``.ddfast.lock`` (host, pid, start time)
    is the first thing written, so an unwritable ``flag`` stops the run before any work. A folder another run
    holds is refused with FileExistsError naming that run's host and pid, unless its lock is stale (same host, the
    pid is dead) or ``force``. Temporary files that killed writes left are removed. When the block raises and
    wrote nothing, the folders this call created are removed again; the lock goes in any case."""
    folder = Path(path)
    created = _missing_ancestors(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        claim = _write_claim(folder / LOCK_NAME)
    except OSError as exc:
        _remove_empty(created)
        raise PermissionError(f"{flag} {os.fspath(folder)!r} is not a folder this process can write to: {exc}") \
            from exc
    try:
        lock = _acquire(folder / LOCK_NAME, claim, force, flag)
    except BaseException:
        _remove_empty(created)
        raise
    remove_orphan_temporaries(folder)
    try:
        yield folder
    except BaseException:
        _release(lock)
        _remove_empty(created)
        raise
    _release(lock)


def _missing_ancestors(folder: Path) -> list[Path]:
    """``folder`` and those of its parents that do not exist yet, innermost first."""
    missing = []
    for candidate in [folder, *folder.absolute().parents]:
        if candidate.exists():
            break
        missing.append(candidate)
    return missing


def _remove_empty(folders: list[Path]) -> None:
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:  # not empty (the run wrote something) or already gone
            return


def _write_claim(lock: Path) -> dict:
    """This process's lock record (host, pid, start time, a random token), written complete to a file beside
    ``lock`` (the run's first write into its folder); returns it with that file's ``claim`` path."""
    me = {"host": socket.gethostname(), "pid": os.getpid(), "token": secrets.token_hex(8),
          "started": time.strftime("%Y-%m-%d %H:%M:%S %z")}
    claim = lock.with_name(f"{lock.name}.{me['token']}")
    claim.write_text(json.dumps(me) + "\n")
    return {**me, "claim": claim}


def _acquire(lock: Path, me: dict, force: bool, flag: str) -> dict:
    """Hard-link ``me``'s claim file to ``lock`` (atomic, and a reader never sees a half-written lock); a stale or
    (``force``) live lock is taken over. Returns ``me`` with the lock's ``path``."""
    claim = me.pop("claim")
    try:
        while True:
            try:
                os.link(claim, lock)
                return {**me, "path": lock}
            except FileExistsError:
                pass
            other = _read_lock(lock)
            if other is None:
                continue  # released meanwhile
            if not force and not _stale(other):
                raise FileExistsError(
                    f"{flag} {os.fspath(lock.parent)!r} is in use by another ddfast run (pid {other.get('pid')} on "
                    f"{other.get('host')}, started {other.get('started')}); wait for it to finish, use another "
                    f"{flag}, or pass --force (force=True) if that run is gone")
            _take_over(lock, other)
    finally:
        with contextlib.suppress(FileNotFoundError):
            claim.unlink()


def _read_lock(lock: Path) -> dict | None:
    try:
        return json.loads(lock.read_text())
    except FileNotFoundError:
        return None
    except (ValueError, OSError):
        return {"host": "?", "pid": "?", "started": "?", "token": None}  # unreadable: only --force takes it


def _stale(holder: dict) -> bool:
    """A lock is stale when it was taken on this host by a process that no longer exists."""
    if holder.get("host") != socket.gethostname() or not isinstance(holder.get("pid"), int):
        return False
    try:
        os.kill(holder["pid"], 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def _take_over(lock: Path, holder: dict) -> None:
    """Move ``holder``'s lock aside, unless another process replaced it meanwhile (then it is put back)."""
    aside = lock.with_name(f"{lock.name}.{secrets.token_hex(8)}.old")
    try:
        os.rename(lock, aside)
    except FileNotFoundError:
        return
    if _read_lock(aside) != holder:  # a live run's lock, taken after we read the stale one
        with contextlib.suppress(FileExistsError):
            os.link(aside, lock)
    aside.unlink()


def _release(lock: dict) -> None:
    """Remove the lock if it is still this run's (a forced takeover may have replaced it)."""
    path = lock["path"]
    if (_read_lock(path) or {}).get("token") == lock["token"]:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
