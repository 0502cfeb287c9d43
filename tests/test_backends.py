"""Backend selection: use_backend, DDFAST_BACKEND, auto, clear errors, validation records, _C loading."""

from __future__ import annotations

import json

import pytest
import torch

import ddfast
from ddfast import _ext, backends
from ddfast.ops.grad_distance import DISPATCH



def test_use_backend_forces_and_restores():
    assert backends.requested_backend() == ("auto", "default")
    with ddfast.use_backend("reference"):
        assert backends.requested_backend() == ("reference", "ddfast.use_backend")
        assert DISPATCH.resolve(torch.device("cpu"), torch.float32)[0] == "reference"
        with ddfast.use_backend("auto"):
            assert backends.requested_backend()[0] == "auto"
        assert backends.requested_backend()[0] == "reference"
    assert backends.requested_backend() == ("auto", "default")


def test_backends_ran_records_what_each_op_resolved_to():
    backends.backends_ran(reset=True)
    g = [torch.randn(2, 3, dtype=torch.float64)]
    with ddfast.use_backend("reference"):
        ddfast.grad_distance(g, g)
    ddfast.class_mean_distance(g[0], torch.tensor([0, 1]), g[0], torch.tensor([0, 1]), 2)
    want_cpu = "cpp" if _ext.has_cpp() else "reference"
    assert backends.backends_ran(reset=True) == {"class_mean_distance": [want_cpu], "grad_distance": ["reference"]}
    assert backends.backends_ran() == {}


def test_environment_variable(monkeypatch):
    monkeypatch.setenv("DDFAST_BACKEND", "reference")
    assert DISPATCH.resolve(torch.device("cpu"), torch.float32)[0] == "reference"
    monkeypatch.setenv("DDFAST_BACKEND", "fastest")
    with pytest.raises(ValueError, match="DDFAST_BACKEND: unknown ddfast backend 'fastest'"):
        DISPATCH.resolve(torch.device("cpu"), torch.float32)


def test_unknown_backend_name():
    with pytest.raises(ValueError, match="unknown ddfast backend 'cudnn'"):
        with ddfast.use_backend("cudnn"):
            pass


def test_auto_on_cpu_prefers_cpp_when_built():
    name, _ = DISPATCH.resolve(torch.device("cpu"), torch.float32)
    assert name == ("cpp" if _ext.has_cpp() else "reference")


def test_forced_cuda_backend_on_cpu_tensors_is_a_clear_error():
    with ddfast.use_backend("cuda"), pytest.raises(backends.BackendUnavailableError,
                                                   match="grad_distance: backend 'cuda' .* cannot run: the cuda "
                                                         "backend runs CUDA tensors only"):
        ddfast.grad_distance([torch.ones(2, 2)], [torch.ones(2, 2)])


def test_forced_triton_on_cpu_tensors_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(backends, "triton_interpreting", lambda: False)
    with ddfast.use_backend("triton"), pytest.raises(backends.BackendUnavailableError, match="TRITON_INTERPRET=1"):
        ddfast.grad_distance([torch.ones(2, 2)], [torch.ones(2, 2)])


def test_forced_cpp_without_extension_says_why(monkeypatch):
    monkeypatch.setattr(_ext, "_C", None)
    monkeypatch.setattr(_ext, "LOAD_ERROR", "not built: DDFAST_BUILD_CPP=0")
    with ddfast.use_backend("cpp"), pytest.raises(backends.BackendUnavailableError,
                                                  match="ddfast._C is unavailable .not built: DDFAST_BUILD_CPP=0"):
        ddfast.grad_distance([torch.ones(2, 2)], [torch.ones(2, 2)])
    assert DISPATCH.resolve(torch.device("cpu"), torch.float32)[0] == "reference"  # auto falls back silently


def test_extension_built_for_another_torch_is_refused(monkeypatch):
    monkeypatch.setattr(_ext, "_read_build_info", lambda: {"torch_version": "1.0.0", "cpp": True})
    monkeypatch.setattr(_ext.importlib.util, "find_spec", lambda name: object())  # as if _C were there
    module, _, error = _ext._load()
    assert module is None
    assert "built against torch 1.0.0" in error and torch.__version__ in error


def test_pure_python_install_ignores_a_stale_extension(monkeypatch):
    monkeypatch.setattr(_ext, "_read_build_info", lambda: {"cpp": False, "skipped": "DDFAST_BUILD_CPP=0"})
    module, _, error = _ext._load()
    assert module is None and error == "not built: DDFAST_BUILD_CPP=0"


def test_validation_records_match_op_backend_and_source(tmp_path, monkeypatch):
    source = backends.current_source_hash("grad_distance", "triton")
    path = tmp_path / "gpu_validated.json"
    path.write_text(json.dumps({"kernels": [
        {"op": "grad_distance", "backend": "triton", "source_hash": "stale", "gpu": "old"},
        {"op": "grad_distance", "backend": "triton", "source_hash": source, "gpu": "NVIDIA H100"},
    ]}))
    monkeypatch.setattr(backends, "VALIDATED_PATH", path)
    backends.validated_entries.cache_clear()
    backends.validation_record.cache_clear()
    try:
        assert backends.validation_record("grad_distance", "triton")["gpu"] == "NVIDIA H100"
        assert backends.validation_record("grad_distance", "cuda") is None
    finally:
        backends.validated_entries.cache_clear()
        backends.validation_record.cache_clear()


def test_triton_source_hash_tracks_the_kernel_file():
    h = backends.current_source_hash("grad_distance", "triton")
    assert isinstance(h, str) and len(h) == 16
    assert backends.current_source_hash("grad_distance", "reference") is None


def test_info_lists_backends(capsys):
    from ddfast.info import main

    main()
    out = capsys.readouterr().out
    assert "backends:" in out and "reference  loaded" in out
    assert ("cpp        loaded" in out) == _ext.has_cpp()
    assert "grad_distance/cuda" in out and "grad_distance/triton" in out


def test_info_names_the_cuda_kernels_a_build_holds_and_a_load_that_lacks_them(monkeypatch):
    from ddfast import info

    cuda_build = {**_ext.BUILD_INFO, "cpp": True, "cuda": True, "cuda_arch_list": "8.0;9.0+PTX",
                  "torch_version": torch.__version__, "cuda_source_hashes": {"sgd_step": "a", "grad_distance": "b"}}
    monkeypatch.setattr(_ext, "BUILD_INFO", cuda_build)
    monkeypatch.setattr(_ext, "has_cpp", lambda: True)
    monkeypatch.setattr(_ext, "has_cuda_kernels", lambda: True)
    line = next(x for x in info.report().splitlines() if x.startswith("build:"))
    assert line == (f"build: built against torch {torch.__version__}, cuda kernels yes, for 8.0;9.0+PTX: "
                    "grad_distance, sgd_step")
    monkeypatch.setattr(_ext, "has_cuda_kernels", lambda: False)
    assert "(but the loaded ddfast._C has none)" in info.report()


def test_backward_runs_the_backend_of_its_forward(monkeypatch):
    """Autograd runs CUDA backward passes on its own threads, where use_backend() does not reach: the
    backward must use the backend the forward resolved. Simulated here with a backward run on
    another thread after the use_backend block has ended."""
    import threading

    from ddfast.ops.grad_distance import reference

    from ddfast.ops.grad_distance._op import grad_distance_op

    calls = []
    original = reference.backward
    monkeypatch.setattr(reference, "backward", lambda *a: calls.append(1) or original(*a))
    for call in (ddfast.grad_distance, lambda s, r: grad_distance_op(s, r, "ours", [1.0], False)[0]):
        g_syn = [torch.randn(3, 4, requires_grad=True)]
        with ddfast.use_backend("reference"):
            out = call(g_syn, [torch.randn(3, 4)])
        thread = threading.Thread(target=out.backward)
        thread.start()
        thread.join()
        assert calls and g_syn[0].grad is not None
        calls.clear()
