"""Build ddfast and, unless DDFAST_BUILD_CPP=0, its compiled extension ddfast._C.

Environment:
  DDFAST_BUILD_CPP=0   pure-Python install (reference + triton backends only)
  DDFAST_BUILD_CPP=1   the C++ build is required: a failure stops the install
                       (default: a failed build is reported and the install goes on without _C)
  DDFAST_BUILD_CUDA=1  build the CUDA kernels (error if torch has no CUDA or nvcc is missing)
  DDFAST_BUILD_CUDA=0  never build the CUDA kernels
                       (default: build them when torch has CUDA and nvcc is found)
  TORCH_CUDA_ARCH_LIST GPU architectures; default "8.0;9.0" when no GPU is visible
  MAX_JOBS             parallel compile jobs (ninja)

A wheel with the compiled extension records what it was built against in its version's local label,
e.g. ddfast-0.1.0+torch2.11.0.cu130-cp310-abi3-linux_x86_64.whl or ddfast-0.1.0+torch2.13.0.cpu-...whl (and in
ddfast/build_info.json, which makes ddfast refuse to load ddfast._C under another torch), and requires exactly
that torch release (``torch==2.11.0``, any local build label), so pip never swaps the torch it was built against;
the sdist and a pure-Python wheel keep the plain version and ``torch>=2.4``. ddfast._C uses CPython's limited API
(3.10), so one wheel serves every CPython >= 3.10 (tag cp310-abi3); it is not yet built on LibTorch's stable ABI,
so a wheel is per torch release (docs/DESIGN.md, "Wheels for clusters").
"""

from __future__ import annotations

import importlib.util
import json
import os
import platform
import sys
from pathlib import Path

from setuptools import setup

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
BUILD_INFO = ROOT / "ddfast" / "build_info.json"
CUDA_OPS = sorted(p.parent.name for p in CSRC.glob("*/cuda.cpp"))  # the ops with csrc/<op>/<op>.cu + cuda.cpp
VERSION = "0.1.0"  # also ddfast.__version__
LIMITED_API = "0x030A0000"  # ddfast._C: CPython's limited API of 3.10 (requires-python), an abi3 wheel
DEPENDENCIES = ["torch>=2.4", "numpy"]
NO_TORCH = ("setup.py: ddfast builds against PyTorch and this Python has no torch: install it first (CPU: pip install "
            "torch --index-url https://download.pytorch.org/whl/cpu; CUDA: pip install torch), then pip install "
            "setuptools ninja and pip install -e '.[cli]' --no-build-isolation (README, \"Use ddfast in your own code\")")


def _load_source_hash():
    spec = importlib.util.spec_from_file_location("_ddfast_source_hash", ROOT / "ddfast" / "_source_hash.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _env_flag(name: str) -> str | None:
    value = os.environ.get(name)
    if value not in (None, "", "0", "1"):
        sys.exit(f"setup.py: {name} must be 0 or 1, got {value!r}")
    return value or None


# setup.py commands that build or install; the others (egg_info, dist_info: the metadata steps that build frontends run
# in the source tree before building elsewhere) must leave the checkout's build_info.json alone
BUILD_COMMANDS = ("build", "build_ext", "bdist_wheel", "editable_wheel", "develop", "install", "bdist_egg")


def _write_build_info(info: dict) -> None:
    if any(command in sys.argv for command in BUILD_COMMANDS):
        BUILD_INFO.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")


def _extension_setup() -> tuple[list, dict]:
    build_cpp = _env_flag("DDFAST_BUILD_CPP")
    build_cuda = _env_flag("DDFAST_BUILD_CUDA")
    info = {"python": platform.python_version(), "cpp": False, "cuda": False}
    if "sdist" in sys.argv:  # sources only: nothing is compiled, and the checkout's build_info.json stays as it is
        return [], {}
    if build_cpp == "0":
        info["skipped"] = "DDFAST_BUILD_CPP=0"
        _write_build_info(info)
        return [], {}

    try:
        import torch
    except ImportError:
        sys.exit(NO_TORCH)
    from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

    nvcc = Path(CUDA_HOME, "bin", "nvcc") if CUDA_HOME else None
    has_nvcc = bool(nvcc and nvcc.exists())
    torch_cuda = torch.version.cuda
    if build_cuda == "1":
        if torch_cuda is None:
            sys.exit(f"setup.py: DDFAST_BUILD_CUDA=1 but torch {torch.__version__} is a CPU-only build; "
                     "install a CUDA build of torch or unset DDFAST_BUILD_CUDA")
        if not has_nvcc:
            sys.exit("setup.py: DDFAST_BUILD_CUDA=1 but nvcc was not found (set CUDA_HOME)")
        with_cuda = True
    elif build_cuda == "0":
        with_cuda = False
    else:
        with_cuda = torch_cuda is not None and has_nvcc
    if with_cuda and not Path(CUDA_HOME, "include", "cuda_runtime.h").is_file():
        sys.exit(f"setup.py: building the CUDA kernels with nvcc from CUDA_HOME={CUDA_HOME}, which has no "
                 "include/cuda_runtime.h (a wrapper script on PATH makes torch guess its parent folder); set "
                 "CUDA_HOME to the CUDA toolkit's folder, e.g. CUDA_HOME=/usr/local/cuda")
    if with_cuda and not os.environ.get("TORCH_CUDA_ARCH_LIST") and not torch.cuda.is_available():
        os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"

    sources = [CSRC / "module.cpp"] + sorted(CSRC.glob("*/bind.cpp")) + sorted(CSRC.glob("*/cpu.cpp"))
    cxx_flags = ["-O3", "-fopenmp"]
    define_macros = [("Py_LIMITED_API", LIMITED_API)]
    extension = CppExtension
    extra = {"cxx": cxx_flags}
    if with_cuda:
        extension = CUDAExtension
        sources += [CSRC / op / f"{op}.cu" for op in CUDA_OPS] + [CSRC / op / "cuda.cpp" for op in CUDA_OPS]
        define_macros.append(("DDFAST_WITH_CUDA", "1"))
        extra["nvcc"] = ["-O3", "-lineinfo"]

    source_hash = _load_source_hash()
    info.update({
        "cpp": True,
        "cuda": with_cuda,
        "torch_version": torch.__version__,
        "torch_cuda": torch_cuda,
        "cuda_arch_list": os.environ.get("TORCH_CUDA_ARCH_LIST") if with_cuda else None,
        "cxx_flags": cxx_flags,
        "nvcc_flags": extra.get("nvcc"),
        "cuda_source_hashes": {op: source_hash.cuda_source_hash(op, CSRC) for op in CUDA_OPS} if with_cuda else {},
        "strict": build_cpp == "1",
    })
    _write_build_info(info)

    class OptionalBuildExtension(BuildExtension):
        """A failed build is reported (build_info.json says why) unless DDFAST_BUILD_CPP=1."""

        def build_extension(self, ext):
            try:
                super().build_extension(ext)
            except Exception as exc:  # noqa: BLE001 - any compiler failure
                if build_cpp == "1":
                    raise
                info.update({"cpp": False, "cuda": False, "build_error": f"{type(exc).__name__}: {exc}"[:2000]})
                _write_build_info(info)
                print(f"WARNING: building ddfast._C failed; ddfast installs without it ({exc})", file=sys.stderr)

    ext = extension(
        name="ddfast._C",
        sources=[str(p.relative_to(ROOT)) for p in sources],
        include_dirs=[str(CSRC)],
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"],
        py_limited_api=True,
    )
    return [ext], {"build_ext": OptionalBuildExtension.with_options(use_ninja=True)}


def _built_wheel() -> dict | None:
    """What ddfast._C of the wheel being built was compiled against (build_info.json), or None when this is not a
    wheel with ddfast._C."""
    if "bdist_wheel" not in sys.argv:
        return None
    built = json.loads(BUILD_INFO.read_text())
    return built if built.get("cpp") else None


def _version(built: dict | None) -> str:
    """VERSION, plus the torch and CUDA versions as a local label when building a wheel with ddfast._C."""
    if built is None:
        return VERSION
    cuda = f"cu{built['torch_cuda'].replace('.', '')}" if built.get("cuda") else "cpu"
    return f"{VERSION}+torch{built['torch_version'].split('+')[0]}.{cuda}"


def _dependencies(built: dict | None) -> list[str]:
    """A wheel with ddfast._C needs the torch release it was compiled against (any local label: +cu130, +cpu)."""
    if built is None:
        return DEPENDENCIES
    return [f"torch=={built['torch_version'].split('+')[0]}", *DEPENDENCIES[1:]]


ext_modules, cmdclass = _extension_setup()
_built = _built_wheel()
setup(version=_version(_built), install_requires=_dependencies(_built), ext_modules=ext_modules, cmdclass=cmdclass,
      options={"bdist_wheel": {"py_limited_api": "cp310"}} if ext_modules else {})
