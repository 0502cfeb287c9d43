"""Content hashes of kernel sources, shared by setup.py and the runtime.

A GPU kernel is trusted by ``auto`` dispatch only if ``ddfast/gpu_validated.json`` holds an entry
for exactly the source it runs (docs/semantics.md#backends-and-dispatch). This module has no
imports beyond the standard library so that ``setup.py`` can load it before ddfast is installed.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent


def _digest(paths: list[Path], root: Path) -> str:
    h = hashlib.sha256()
    for path in sorted(paths):
        h.update(str(path.relative_to(root)).encode())
        h.update(b"\0")
        h.update(path.read_bytes())
        h.update(b"\0")
    return h.hexdigest()[:16]


_LOCAL_INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"', re.MULTILINE)


def _with_local_includes(files: list[Path], csrc: Path) -> list[Path]:
    """``files`` plus every csrc/ header they #include "..." (transitively): a kernel that includes a
    shared header elsewhere in csrc/ (csrc/flat/flat_cuda.cuh) is hashed with it."""
    seen, todo = set(files), list(files)
    while todo:
        for name in _LOCAL_INCLUDE.findall(todo.pop().read_text(errors="replace")):
            path = csrc / name
            if path.is_file() and path not in seen:
                seen.add(path)
                todo.append(path)
    return list(seen)


def cuda_source_hash(op: str, csrc_dir: Path | None = None) -> str:
    """Hash of an op's CUDA kernels and glue, the shared helpers, and the csrc/ headers they include
    (computed at build time)."""
    csrc = csrc_dir or REPO_DIR / "csrc"
    files = [p for p in (csrc / op).iterdir() if p.suffix in {".cu", ".cuh", ".h"} or p.name == "cuda.cpp"]
    files += [p for p in (csrc / "common").iterdir() if p.is_file()]
    return _digest(_with_local_includes(files, csrc), csrc)


def triton_source_hash(op: str) -> str:
    """Hash of an op's Triton kernels and the shared Triton helpers (computed at run time)."""
    files = [PACKAGE_DIR / "ops" / op / "triton.py", PACKAGE_DIR / "ops" / "_triton_common.py"]
    return _digest([p for p in files if p.exists()], PACKAGE_DIR)
