"""Build ddfast's CUDA wheel for GPU clusters without a GPU, then prove it installs and imports.

1. A build venv (build/wheel-cuda/build-torch<T>, kept between runs) gets the CUDA build of torch <T> that the
   package index serves (torch 2.11.0 there is CUDA 13.0, with its nvidia-* runtime packages), numpy,
   setuptools, wheel, build and ninja. Nothing else is downloaded.
2. ``python -m build --no-isolation`` makes the sdist and, from it, the wheel, with DDFAST_BUILD_CPP=1,
   DDFAST_BUILD_CUDA=1 and TORCH_CUDA_ARCH_LIST (default "8.0;9.0+PTX": A100 and H100/H200 cubins, and PTX for
   the newest, which later GPUs JIT-compile); nvcc comes from CUDA_HOME or PATH.
3. The wheel goes to dist/cuda/ and is checked in a fresh venv per Python given (default: this one and 3.12,
   which the one cp310-abi3 wheel must both serve): ``pip install`` of the wheel (it requires torch==<T>, so pip
   takes that torch from the index or its cache), ``ddfast info`` (CUDA kernels compiled in, no device),
   ``cuobjdump --list-elf/--list-ptx`` on ddfast/_C (the cubins and PTX per architecture), and a smoke test of
   the installed C++ CPU kernels against the reference.

Prints the wheel's name, tags, size and each step's seconds, writes them to dist/cuda/<wheel>.json and appends them
as one JSON line (op "wheel", with the date, commit and build machine) to bench/results/wheels.jsonl, from which
bench/report.py renders the README's wheel table.

Usage: python scripts/wheel_cuda.py [--torch 2.11.0] [--arch "8.0;9.0+PTX"] [--pythons python3.11,python3.12]
       [--check WHEEL]   (step 3 only, for a wheel already built)
       (make wheel-cuda; WHEEL_TORCH=2.13.0 make wheel-cuda for another torch release)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / "build" / "wheel-cuda"
BUILD_PACKAGES = ["numpy", "setuptools>=70.1", "wheel", "build", "ninja"]

SMOKE = """
import torch, ddfast
from ddfast import _ext
assert _ext.has_cpp(), _ext.LOAD_ERROR
assert _ext.has_cuda_kernels(), "the installed ddfast._C has no CUDA kernels"
g = torch.Generator().manual_seed(0)
shapes = [(8, 3, 3, 3), (8,), (16, 8, 3, 3), (10, 64)]
syn = [torch.randn(s, generator=g) for s in shapes]
real = [torch.randn(s, generator=g) for s in shapes]
f = torch.randn(12, 5, generator=g, dtype=torch.float64)
values = {}
for backend in ("reference", "cpp"):
    with ddfast.use_backend(backend):
        values[backend] = float(ddfast.grad_distance(syn, real))
        values[backend + " cmd"] = float(ddfast.class_mean_distance(f[:6], torch.arange(6) % 3, f[6:],
                                                                    torch.arange(6) % 3, 3))
assert abs(values["cpp"] - values["reference"]) < 1e-4 * abs(values["reference"]), values
assert abs(values["cpp cmd"] - values["reference cmd"]) < 1e-9, values
print("smoke: grad_distance and class_mean_distance, cpp == reference:", values)
"""


def run(cmd: list, log: Path, env: dict | None = None, cwd: Path | None = None) -> float:
    """Run ``cmd`` with its output appended to ``log``; exits naming the log when it fails. Returns seconds."""
    start = time.perf_counter()
    with log.open("a") as out:
        out.write(f"\n$ {' '.join(map(str, cmd))}\n")
        out.flush()
        done = subprocess.run([str(c) for c in cmd], stdout=out, stderr=subprocess.STDOUT, cwd=cwd,
                              env={**os.environ, **(env or {})})
    if done.returncode:
        sys.exit(f"wheel_cuda: `{' '.join(map(str, cmd))}` failed (exit {done.returncode}); see {log}")
    return time.perf_counter() - start


def find_python(name: str) -> str:
    """``name`` (e.g. python3.12) if it runs, else pyenv's installed copy of that version."""
    if subprocess.run([name, "--version"], capture_output=True).returncode == 0:
        return name
    version = name.removeprefix("python")
    found = sorted(Path.home().glob(f".pyenv/versions/{version}*/bin/{name}"))
    if not found:
        sys.exit(f"wheel_cuda: no {name} here (on PATH or under ~/.pyenv/versions); pass --pythons")
    return str(found[-1])


def venv(python: str, folder: Path, log: Path) -> Path:
    if not (folder / "bin" / "python").exists():
        run([python, "-m", "venv", folder], log)
    return folder / "bin" / "python"


def cuda_home() -> str:
    """$CUDA_HOME, else the first toolkit folder with include/cuda_runtime.h among the nvcc on PATH's (links
    resolved) and /usr/local/cuda; torch alone would take /usr/local for a /usr/local/bin/nvcc wrapper."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    nvcc = shutil.which("nvcc")
    candidates = ([Path(nvcc).resolve().parent.parent] if nvcc else []) + [Path("/usr/local/cuda")]
    for folder in candidates:
        if (folder / "include" / "cuda_runtime.h").is_file() and (folder / "bin" / "nvcc").is_file():
            return str(folder)
    sys.exit(f"wheel_cuda: no CUDA toolkit with include/cuda_runtime.h in {[str(c) for c in candidates]}; "
             "set CUDA_HOME")


def wheel_tags(wheel: Path) -> str:
    with zipfile.ZipFile(wheel) as whl:
        meta = next(n for n in whl.namelist() if n.endswith(".dist-info/WHEEL"))
        return ", ".join(line.split(": ", 1)[1] for line in whl.read(meta).decode().splitlines()
                         if line.startswith("Tag: "))


def cuda_images(wheel: Path) -> dict:
    """The GPU code in the wheel's ddfast/_C: the architectures of its cubins and PTX, read from the fatbin headers
    nvcc embeds (magic 0xBA55ED50; each entry: kind 1 PTX / 2 cubin at byte 0, header size at 4, padded payload
    size at 8, SM version at 28), so no cuobjdump is needed."""
    with zipfile.ZipFile(wheel) as whl:
        data = whl.read(next(n for n in whl.namelist() if n.startswith("ddfast/_C") and n.endswith(".so")))
    magic, images = struct.pack("<I", 0xBA55ED50), {"cubin": set(), "ptx": set()}
    pos = data.find(magic)
    while pos != -1:
        header, size = struct.unpack_from("<HQ", data, pos + 6)
        entry, end = pos + header, pos + header + size
        while entry < end:
            kind, _, entry_header, padded = struct.unpack_from("<HHII", data, entry)
            if kind in (1, 2):
                images["ptx" if kind == 1 else "cubin"].add(f"sm_{struct.unpack_from('<I', data, entry + 28)[0]}")
            entry += entry_header + padded
        pos = data.find(magic, end)
    return {kind: sorted(archs) for kind, archs in images.items()}


def build_wheel(torch_release: str, arch: str, python: str, log: Path, seconds: dict) -> Path:
    """Steps 1 and 2; the wheel, copied to dist/cuda/."""
    build_python = venv(python, WORK / f"build-torch{torch_release}", log)
    seconds["build venv"] = run([build_python, "-m", "pip", "install", "-q", f"torch=={torch_release}",
                                 *BUILD_PACKAGES], log)
    out = WORK / f"out-torch{torch_release}"
    shutil.rmtree(out, ignore_errors=True)
    env = {"DDFAST_BUILD_CPP": "1", "DDFAST_BUILD_CUDA": "1", "TORCH_CUDA_ARCH_LIST": arch, "CUDA_HOME": cuda_home(),
           "MAX_JOBS": os.environ.get("MAX_JOBS", "2"), "PATH": f"{build_python.parent}:{os.environ['PATH']}"}
    seconds["build wheel"] = run([build_python, "-m", "build", "--no-isolation", "--outdir", out], log, env=env,
                                 cwd=ROOT)
    built = sorted(out.glob("ddfast-*.whl"))
    if len(built) != 1 or "+torch" not in built[0].name or ".cu" not in built[0].name:
        sys.exit(f"wheel_cuda: expected one CUDA wheel in {out}, found {[p.name for p in built]}; see {log}")
    dist = ROOT / "dist" / "cuda"
    dist.mkdir(parents=True, exist_ok=True)
    shutil.copy2(built[0], dist / built[0].name)
    return dist / built[0].name


def check_install(wheel: Path, python: str, log: Path) -> dict:
    """Step 3 for one interpreter: a fresh venv, the wheel installed, ``ddfast info`` and the smoke test."""
    check = WORK / f"check-{Path(python).name}-{wheel.stem.split('-')[1]}"
    shutil.rmtree(check, ignore_errors=True)
    py = venv(python, check, log)
    took = run([py, "-m", "pip", "install", "-q", wheel], log)
    # run from the venv's folder: in the checkout, `import ddfast` would find the source tree first
    info = subprocess.run([check / "bin" / "ddfast", "info"], capture_output=True, text=True, cwd=check)
    if info.returncode or "cuda kernels yes" not in info.stdout:
        sys.exit(f"wheel_cuda: `ddfast info` under {python} does not list the CUDA kernels:\n{info.stdout}"
                 f"{info.stderr}")
    run([py, "-c", SMOKE], log, cwd=check)
    lines = info.stdout.splitlines()
    return {"install_seconds": round(took, 1), "python": lines[1].split("  ")[0],
            "info": [line for line in lines if line.startswith(("build:", "CUDA:", "  cuda "))]}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--torch", default="2.11.0", help="torch release to build against (default: the "
                        "project's GPU machines')")
    parser.add_argument("--arch", default="8.0;9.0+PTX", help="TORCH_CUDA_ARCH_LIST")
    parser.add_argument("--pythons", default=f"python{sys.version_info.major}.{sys.version_info.minor},python3.12",
                        help="comma-separated interpreters to install the wheel into (the first builds it)")
    parser.add_argument("--check", type=Path, default=None, metavar="WHEEL", help="only check this wheel (step 3)")
    args = parser.parse_args(argv)
    pythons = [find_python(p) for p in args.pythons.split(",")]
    WORK.mkdir(parents=True, exist_ok=True)
    log = WORK / f"torch{args.torch}.log"
    log.write_text("")
    seconds = {}
    wheel = args.check or build_wheel(args.torch, args.arch, pythons[0], log, seconds)
    report = {"wheel": wheel.name, "tags": wheel_tags(wheel), "mib": round(wheel.stat().st_size / 2**20, 1),
              "torch": args.torch, "arch": args.arch, "cuda_images": cuda_images(wheel), "installs": {}}
    if not report["cuda_images"]["cubin"]:
        sys.exit(f"wheel_cuda: {wheel.name}'s ddfast/_C holds no cubin")
    for python in pythons:
        report["installs"][Path(python).name] = check_install(wheel, python, log)
    report["seconds"] = {k: round(v, 1) for k, v in seconds.items()}
    (wheel.parent / f"{wheel.name}.json").write_text(json.dumps(report, indent=2) + "\n")
    if not args.check:
        record(report)
    print(json.dumps(report, indent=2))


def record(report: dict) -> None:
    """Append ``report`` to bench/results/wheels.jsonl as bench/report.py reads records."""
    commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    if subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True,
                      text=True).stdout.strip():
        commit += "+dirty"  # built from changes not yet committed on top of it
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown CPU")
    row = {"op": "wheel", "case": report["wheel"], "device": f"{cpu} ({os.cpu_count()} cores), no GPU",
           "device_slug": "wheels", "commit": commit, "torch": report["torch"], "triton": None,
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), **report}
    with (ROOT / "bench" / "results" / "wheels.jsonl").open("a") as f:
        f.write(json.dumps(row, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
