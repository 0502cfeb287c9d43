"""``ddfast info`` / ``python -m ddfast.info``: versions, devices, backends and why any did not load,
and the GPU kernels recorded as validated (docs/semantics.md#backends-and-dispatch)."""

from __future__ import annotations

import functools
import platform
import subprocess
from pathlib import Path

import torch

from . import __version__, _ext, backends


def report() -> str:
    lines = [f"ddfast {__version__}", f"python {platform.python_version()}  torch {torch.__version__}"]
    triton_error = backends.triton_import_error()
    if triton_error is None:
        import triton

        lines.append(f"triton {triton.__version__}" + ("  (TRITON_INTERPRET=1)" if backends.triton_interpreting() else ""))
    else:
        lines.append(f"triton: not usable ({triton_error})")
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            lines.append(f"cuda:{i} {p.name} (sm_{p.major}{p.minor}, {p.total_memory / 2**30:.0f} GiB)")
    else:
        lines.append("CUDA: no device visible")
    info = _ext.BUILD_INFO
    if info.get("cpp"):
        cuda = "no"
        if info.get("cuda"):
            ops = ", ".join(sorted(info.get("cuda_source_hashes", {})))
            loaded = "" if _ext.has_cuda_kernels() or not _ext.has_cpp() else " (but the loaded ddfast._C has none)"
            cuda = f"yes, for {info.get('cuda_arch_list')}: {ops}{loaded}"
        lines.append(f"build: built against torch {info.get('torch_version')}, cuda kernels {cuda}")
    else:
        lines.append(f"build: {_ext.LOAD_ERROR}")
    lines.append("backends:")
    for name in backends.BACKENDS:
        probe = "cuda" if name in backends.GPU_BACKENDS else "cpu"
        if name == "triton" and not torch.cuda.is_available() and backends.triton_interpreting():
            probe = "cpu"
        reason = backends.availability(name, probe)
        lines.append(f"  {name:10s} {'loaded' if reason is None else 'unavailable: ' + reason}")
    requested, source = backends.requested_backend()
    lines.append(f"requested backend: {requested} ({source})")
    lines.append("GPU kernels validated on a GPU for this source (ddfast/gpu_validated.json):")
    for dispatch in backends.registered_ops():
        for name in backends.GPU_BACKENDS:
            if name not in dispatch.impls:
                continue
            record = backends.validation_record(dispatch.op, name)
            if record:
                lines.append(f"  {dispatch.op}/{name}: {record.get('gpu')}, torch {record.get('torch')}, "
                             f"commit {str(record.get('commit'))[:10]}, {record.get('date')}")
            else:
                lines.append(f"  {dispatch.op}/{name}: not validated (auto runs the reference on CUDA)")
    return "\n".join(lines)


@functools.lru_cache(maxsize=1)
def provenance() -> dict:
    """This ddfast's version and, when it runs from a git checkout, the commit (else None): what a run records."""
    from ._source_hash import REPO_DIR

    try:
        done = subprocess.run(["git", "-C", str(REPO_DIR), "rev-parse", "--show-toplevel", "HEAD"],
                              capture_output=True, text=True, timeout=10)
        top, _, commit = done.stdout.strip().partition("\n")
        commit = commit if done.returncode == 0 and Path(top).resolve() == REPO_DIR else None  # not a site-packages
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"version": __version__, "commit": commit}


def versions() -> dict:
    """The torch, triton (None when it does not import) and Python versions this process runs."""
    triton_version = None
    if backends.triton_import_error() is None:
        import triton

        triton_version = triton.__version__
    return {"torch": torch.__version__, "triton": triton_version, "python": platform.python_version()}


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "cpu"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model and the threads torch uses."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{cpu_name()} ({torch.get_num_threads()} threads)"


def main() -> None:
    print(report())


if __name__ == "__main__":
    main()
