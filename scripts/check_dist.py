"""Check what `make dist` built (CI): one sdist with the kernel sources, and one wheel built from it that carries
ddfast._C and records the running torch in its version's local label and in ddfast/build_info.json, requires exactly
that torch release, and is tagged cp310-abi3 (one wheel for every CPython >= 3.10).

Usage: python scripts/check_dist.py [DIST_DIR]
"""

from __future__ import annotations

import json
import sys
import tarfile
import zipfile
from pathlib import Path

import torch


def main(folder: Path) -> None:
    sdists, wheels = sorted(folder.glob("ddfast-*.tar.gz")), sorted(folder.glob("ddfast-*.whl"))
    if len(sdists) != 1 or len(wheels) != 1:
        sys.exit(f"expected one sdist and one wheel in {folder}, found {[p.name for p in sdists + wheels]}")
    with tarfile.open(sdists[0]) as tar:
        names = tar.getnames()
    kernels = [n for n in names if "/csrc/" in n and n.endswith((".cu", ".cpp"))]
    if not kernels or not any(n.endswith("/setup.py") for n in names):
        sys.exit(f"{sdists[0].name} lacks setup.py or csrc/ kernel sources")
    cuda = f"cu{torch.version.cuda.replace('.', '')}" if torch.version.cuda else "cpu"
    label = f"+torch{torch.__version__.split('+')[0]}."
    if label not in wheels[0].name:
        sys.exit(f"{wheels[0].name} does not record torch {torch.__version__} (expected '{label}<cpu|cuXY>')")
    with zipfile.ZipFile(wheels[0]) as whl:
        files = whl.namelist()
        if not any(n.startswith("ddfast/_C") and n.endswith(".so") for n in files):
            sys.exit(f"{wheels[0].name} has no ddfast/_C extension")
        info = json.loads(whl.read("ddfast/build_info.json"))
        metadata = whl.read(next(n for n in files if n.endswith(".dist-info/METADATA"))).decode()
    release = torch.__version__.split("+")[0]
    if f"Requires-Dist: torch=={release}" not in metadata:
        sys.exit(f"{wheels[0].name} does not require torch=={release}, the torch its ddfast._C was built against")
    if "-cp310-abi3-" not in wheels[0].name:
        sys.exit(f"{wheels[0].name} is not tagged cp310-abi3 (ddfast._C is built on CPython's limited API)")
    if info.get("torch_version") != torch.__version__ or not info.get("cpp"):
        sys.exit(f"{wheels[0].name}: build_info.json says {info}, not a C++ build for torch {torch.__version__}")
    print(f"sdist {sdists[0].name}: {len(kernels)} kernel sources; wheel {wheels[0].name}: ddfast/_C, built for "
          f"torch {info['torch_version']} ({'cuda ' + str(info.get('cuda_arch_list')) if info.get('cuda') else cuda})")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "dist"))
