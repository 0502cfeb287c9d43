"""Does LibTorch's stable ABI carry ddfast's op signatures across torch releases? A probe, built once, loaded twice.

The probe op has grad_distance's argument kinds (two tensor lists, a string, a float list, a bool) and a CPU
kernel written only against ``torch/csrc/stable`` and ``torch/headeronly`` (no ATen, no c10, no pybind11, no
Python): ``ddfast_probe::sq_distance(Tensor[] a, Tensor[] b, str metric, float[] weights, bool batched) ->
Tensor``, the weighted sum over i of sum((a_i - b_i)^2) (float32, contiguous; metric must be "mse"). It is
compiled with ``TORCH_TARGET_VERSION`` 2.10 (the first release whose stable ABI has lists) against the torch of
the build interpreter, then loaded with ``torch.ops.load_library`` under each load interpreter and checked
against torch ops.

Usage: python scripts/stable_abi_probe.py build OUT_DIR     (run by the interpreter whose torch builds it)
       python scripts/stable_abi_probe.py load OUT_DIR      (run by each interpreter whose torch loads it)
       make stable-abi-probe   (builds with the CUDA wheel's build venv, torch 2.11; loads there and in .venv)
"""

from __future__ import annotations

import sys
from pathlib import Path

SOURCE = r"""
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>
#include <torch/headeronly/util/Exception.h>

#include <string>
#include <vector>

using torch::stable::Tensor;

Tensor sq_distance(std::vector<Tensor> a, std::vector<Tensor> b, std::string metric, std::vector<double> weights,
                   bool batched) {
  STD_TORCH_CHECK(metric == "mse", "sq_distance: metric must be mse, got ", metric);
  STD_TORCH_CHECK(!batched, "sq_distance: batched is not probed");
  STD_TORCH_CHECK(!a.empty() && a.size() == b.size() && weights.size() == a.size(), "sq_distance: list sizes");
  double total = 0.0;
  for (size_t i = 0; i < a.size(); ++i) {
    STD_TORCH_CHECK(a[i].scalar_type() == torch::headeronly::ScalarType::Float && a[i].is_contiguous() &&
                    b[i].is_contiguous() && a[i].numel() == b[i].numel(), "sq_distance: float32 contiguous pairs");
    const float* x = static_cast<const float*>(a[i].data_ptr());
    const float* y = static_cast<const float*>(b[i].data_ptr());
    double part = 0.0;
    for (int64_t j = 0; j < a[i].numel(); ++j) part += double(x[j] - y[j]) * double(x[j] - y[j]);
    total += weights[i] * part;
  }
  Tensor out = torch::stable::new_empty(a[0], {}, torch::headeronly::ScalarType::Float);
  *static_cast<float*>(out.mutable_data_ptr()) = static_cast<float>(total);
  return out;
}

STABLE_TORCH_LIBRARY(ddfast_probe, m) {
  m.def("sq_distance(Tensor[] a, Tensor[] b, str metric, float[] weights, bool batched) -> Tensor");
}

STABLE_TORCH_LIBRARY_IMPL(ddfast_probe, CPU, m) { m.impl("sq_distance", TORCH_BOX(&sq_distance)); }
"""

TARGET_VERSION = "((0ULL + 2) << 56) | ((0ULL + 10) << 48)"  # torch 2.10: stable-ABI lists need it


def build(out: Path) -> None:
    import torch
    from torch.utils.cpp_extension import include_paths, library_paths
    import subprocess

    out.mkdir(parents=True, exist_ok=True)
    (out / "probe.cpp").write_text(SOURCE)
    library = out / "ddfast_probe.so"
    cmd = ["c++", "-O2", "-shared", "-fPIC", "-std=c++17", f"-DTORCH_TARGET_VERSION=({TARGET_VERSION})",
           *(f"-I{p}" for p in include_paths()), str(out / "probe.cpp"), "-o", str(library),
           *(f"-L{p}" for p in library_paths()), "-ltorch_cpu", "-lc10"]
    subprocess.run(cmd, check=True)
    (out / "built_with.txt").write_text(torch.__version__ + "\n")
    print(f"built {library} against torch {torch.__version__} (stable ABI target 2.10)")


def load(out: Path) -> None:
    import torch

    torch.ops.load_library(str(out / "ddfast_probe.so"))
    g = torch.Generator().manual_seed(0)
    a = [torch.randn(4, 3, 3, 3, generator=g), torch.randn(7, generator=g)]
    b = [torch.randn(4, 3, 3, 3, generator=g), torch.randn(7, generator=g)]
    got = torch.ops.ddfast_probe.sq_distance(a, b, "mse", [1.0, 0.5], False)
    want = ((a[0] - b[0]) ** 2).sum() + 0.5 * ((a[1] - b[1]) ** 2).sum()
    assert torch.allclose(got, want, rtol=1e-5), (got, want)
    try:
        torch.ops.ddfast_probe.sq_distance(a, b, "ours", [1.0, 0.5], False)
    except RuntimeError as exc:
        assert "metric must be mse" in str(exc), exc
    else:
        raise AssertionError("the probe accepted metric 'ours'")
    built = (out / "built_with.txt").read_text().strip()
    print(f"loaded under torch {torch.__version__} (built with {built}): {float(got):.6f} == {float(want):.6f}")


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("build", "load"):
        sys.exit(__doc__.split("Usage:")[1])
    (build if sys.argv[1] == "build" else load)(Path(sys.argv[2]))
