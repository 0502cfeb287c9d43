"""Shared test helpers: the tolerance table, a verbose closeness check, device/backend discovery.

Error measure (docs/semantics.md#testing-tiers, tier 2): max |got - ref| / max |ref|, with fp64 references.
"""

from __future__ import annotations

import pytest
import torch

from ddfast import _ext, backends

# Relative tolerance per dtype of the tensors under test.
TOLERANCE = {
    torch.float64: 1e-10,
    torch.float32: 2e-5,
    torch.float16: 4e-3,
    torch.bfloat16: 3e-2,
}

HAS_CUDA = torch.cuda.is_available()
INTERPRETING = backends.triton_interpreting()


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    got, ref = got.detach().double().cpu(), ref.detach().double().cpu()
    if got.shape != ref.shape:
        raise AssertionError(f"shape {tuple(got.shape)} != reference shape {tuple(ref.shape)}")
    if got.numel() == 0:
        return 0.0
    nan_mismatch = torch.isnan(got) != torch.isnan(ref)
    if nan_mismatch.any():
        return float("inf")
    finite = ~torch.isnan(ref)
    diff = (got[finite] - ref[finite]).abs()
    scale = ref[finite].abs().max() if finite.any() else torch.tensor(0.0)
    if diff.numel() == 0:
        return 0.0
    return float(diff.max() / scale) if scale > 0 else float(diff.max())


def assert_close(got: torch.Tensor, ref: torch.Tensor, dtype: torch.dtype, what: str = "") -> None:
    """Relative closeness with the table's tolerance; on failure, say where values differ most."""
    err = relative_error(got, ref)
    tol = TOLERANCE[dtype]
    if not err <= tol:
        g, r = got.detach().double().cpu().reshape(-1), ref.detach().double().cpu().reshape(-1)
        worst = int((g - r).abs().nan_to_num(float("inf")).argmax()) if g.numel() else 0
        raise AssertionError(f"{what}: relative error {err:.3e} > {tol:.1e} ({dtype}); worst at flat index {worst}: "
                             f"got {g[worst].item() if g.numel() else None}, reference "
                             f"{r[worst].item() if r.numel() else None}; shape {tuple(got.shape)}")


def cpu_backends() -> list[str]:
    names = ["reference"]
    if _ext.has_cpp():
        names.append("cpp")
    return names


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU (none visible)")
    for item in items:
        if "gpu" in item.keywords and not HAS_CUDA:
            item.add_marker(skip_gpu)
        if "triton" in item.keywords and not HAS_CUDA and not INTERPRETING:
            item.add_marker(pytest.mark.skip(reason="Triton kernels need a CUDA GPU, or TRITON_INTERPRET=1 "
                                                    "(CI runs them in a separate interpreter pass)"))


@pytest.fixture(autouse=True)
def _no_backend_env(monkeypatch):
    """Tests choose backends and the compile setting explicitly; the environment's must not leak in."""
    monkeypatch.delenv("DDFAST_BACKEND", raising=False)
    monkeypatch.setenv("DDFAST_COMPILE", "off")  # eager unless a test asks: auto's timing-based choice stays out
    monkeypatch.delenv("DDFAST_AUTOCAST", raising=False)


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def tiny_digits_buffer(folder, digits8):
    """An MTT buffer of 2 short ConvNetD2 experts (4 snapshots) on 300 images of 8x8 digits, in ``folder``: the
    trajectory methods' tests only need snapshots of the right shapes."""
    from ddfast.experts import save_buffer, train_experts
    from ddfast.models import get_network

    few = slice(0, 300)
    trajectories = train_experts(lambda: get_network("ConvNetD2", 1, 10, (8, 8)), digits8.train_images[few],
                                 digits8.train_labels[few], 2, 4, generator=torch.Generator().manual_seed(0),
                                 progress=False)
    save_buffer(folder / "replay_buffer_0.pt", trajectories)
    return folder
