"""ddfast.compiled: the compile setting, auto's rule, the eager fallback, and compiled vs eager results of the
network paths the methods and evaluation compile (DM's embeddings, the network training of DC/DSA, evaluation)."""

from __future__ import annotations

import json

import pytest
import torch

import ddfast.compiled as compiled
from ddfast.compiled import CompiledCall, compile_mode, compile_report, use_compile, worth_compiling
from ddfast.data import load_dataset
from ddfast.eval import evaluate
from ddfast.methods import METHODS, make_config
from ddfast.methods.dc import train_network_epoch
from ddfast.models import get_network

RULE = {"cpu": {"embed": {"speedup": 2.0, "compile_s": 10.0}, "train_step": {"speedup": 1.02, "compile_s": 1.0}}}


@pytest.fixture(autouse=True)
def _fresh_process_state(monkeypatch):
    """Each test starts as a new process would: no path compiled or failed before, an empty report."""
    monkeypatch.setattr(CompiledCall, "_failed", set())
    monkeypatch.setattr(CompiledCall, "_paid", set())
    compile_report(reset=True)


@pytest.fixture(scope="module")
def digits8():
    return load_dataset("digits", im_size=8)


def test_setting_precedence_and_bad_values(monkeypatch):
    monkeypatch.setenv("DDFAST_COMPILE", "on")
    assert compile_mode() == "on"
    with use_compile("off"):
        assert compile_mode() == "off"
    monkeypatch.setenv("DDFAST_COMPILE", "sometimes")
    with pytest.raises(ValueError, match="DDFAST_COMPILE"):
        compile_mode()
    with pytest.raises(ValueError, match="compile must be one of"):
        with use_compile("yes"):
            pass
    with pytest.raises(ValueError, match="path must be one of"):
        CompiledCall(compiled.forward, "no_such_path")


def test_auto_rule_weighs_compilation_against_the_saving(monkeypatch):
    monkeypatch.setattr(compiled, "rules", lambda: RULE)
    assert worth_compiling("embed", "cuda", 10 ** 6, 1.0)[0] is False  # no rule measured there
    assert "no measured rule" in worth_compiling("embed", "cuda", 10 ** 6, 1.0)[1]
    assert worth_compiling("train_step", "cpu", 10 ** 6, 1.0)[0] is False  # below MIN_SPEEDUP
    # 2x saves half of each call after the first (timed eagerly): 20 calls of 1 s save 9.5 s, 22 save 10.5 s
    assert worth_compiling("embed", "cpu", 20, 1.0)[0] is False
    assert worth_compiling("embed", "cpu", 22, 1.0)[0] is True


def test_shipped_rules_cover_every_path_on_cpu():
    document = json.loads(compiled.RULES_PATH.read_text())
    cpu = document["rules"]["cpu"]
    assert set(cpu) == set(compiled.PATHS)
    for rule in cpu.values():
        assert rule["speedup"] > 0 and rule["compile_s"] > 0


def test_off_and_short_auto_runs_stay_eager(monkeypatch):
    monkeypatch.setattr(compiled, "rules", lambda: RULE)
    calls = []
    monkeypatch.setattr(torch, "compile", lambda *a, **k: calls.append(1))
    net, x = get_network("ConvNetD2", 1, 10, (8, 8)), torch.randn(4, 1, 8, 8)
    with use_compile("off"):
        run = CompiledCall(compiled.embed, "embed", calls=10 ** 9)
    assert torch.equal(run(net, x), net.embed(x)) and torch.equal(run(net, x), net.embed(x))
    with use_compile("auto"):
        short = CompiledCall(compiled.embed, "embed", calls=2)
    short(net, x), short(net, x)
    assert calls == []
    report = compile_report()["embed"]
    assert report["calls"] == 4 and report["compiled"] is False and "does not pay" in report["reason"]


def test_failed_compilation_falls_back_to_eager_with_one_warning(monkeypatch):
    def broken(fn, **_):
        def call(*args):
            raise RuntimeError("no C++ compiler for Inductor")
        return call
    monkeypatch.setattr(torch, "compile", broken)
    net, x = get_network("ConvNetD2", 1, 10, (8, 8)), torch.randn(4, 1, 8, 8)
    with use_compile("on"):
        run = CompiledCall(compiled.forward, "train_step")
        with pytest.warns(UserWarning, match="train_step path failed.*no C\\+\\+ compiler"):
            first = run(net, x)
        again = CompiledCall(compiled.forward, "train_step")  # the path stays eager in this process
    assert torch.equal(first, net(x)) and torch.equal(again(net, x), net(x))
    report = compile_report()["train_step"]
    assert report["compiled"] is False and "compilation failed" in report["reason"]


def test_compiled_embedding_serves_fresh_networks_and_matches_eager():
    x = torch.randn(6, 1, 8, 8)
    with use_compile("on"):
        run = CompiledCall(compiled.embed, "embed", calls=3)
    for seed in range(3):  # DM: a fresh network every iteration
        torch.manual_seed(seed)
        net = get_network("ConvNetD2", 1, 10, (8, 8))
        with torch.no_grad():
            torch.testing.assert_close(run(net, x), net.embed(x), rtol=1e-5, atol=1e-5)
    report = compile_report()["embed"]
    assert report["compiled"] and report["calls"] == 3 and report["compile_seconds"] > 0


def test_compiled_training_matches_eager_training(digits8):
    images, labels = digits8.train_images[:64], digits8.train_labels[:64]
    params = {}
    for mode in ("off", "on"):
        torch.manual_seed(0)
        net = get_network("ConvNetD2", 1, 10, (8, 8))
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
        with use_compile(mode):
            run = CompiledCall(compiled.forward, "train_step")
        for epoch in range(3):
            train_network_epoch(net, optimizer, images, labels, 16, None, torch.Generator().manual_seed(epoch), run)
        params[mode] = torch.cat([p.detach().flatten() for p in net.parameters()])
    assert compile_report()["train_step"]["compiled"]
    torch.testing.assert_close(params["on"], params["off"], rtol=1e-4, atol=1e-5)


# Every method with compiled network paths, at small sizes, and the paths its run must have compiled.
COMPILED_METHODS = {
    "dm": ({"batch_real": 8}, ("embed", "embed_grad")),
    "dsa": ({"batch_real": 8, "outer_loop": 2, "inner_loop": 2}, ("train_step", "class_gradients")),
    "dc": ({"batch_real": 8, "outer_loop": 2, "inner_loop": 2}, ("train_step", "class_gradients")),
    # DREAM+ without its pre-training epoch on real data (112 augmented SGD steps grow the compiled network's
    # rounding, 1e-6 per step, to 4e-3 in the weights) and with random real batches (plain) instead of the k-means
    # query, whose nearest-to-centroid picks are discrete: one rounding flips a pick (seen with 2 threads)
    "dream": ({"batch_real": 4, "inner_steps": 2, "interval": 1, "net_samples": 32, "net_batch": 16,
               "pretrain_epochs": 0, "plain": True},
              ("train_step", "embed", "embed_grad", "class_gradients")),
    "lcs_gm": ({"batch_real": 8, "pretrain_epochs": 1}, ("train_step", "embed", "embed_grad", "class_gradients")),
}


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(COMPILED_METHODS))
def test_method_sets_compiled_equal_eager(digits8, method):
    settings, paths = COMPILED_METHODS[method]
    sets = {}
    for mode in ("off", "on"):
        config = make_config(method, digits8.name, ipc=2, iterations=2, model="ConvNetD2", **settings)
        with use_compile(mode):
            sets[mode] = METHODS[method].distill(digits8, config, progress=False).images
    report = compile_report()
    assert all(report[p]["compiled"] for p in paths)
    config = make_config(method, digits8.name, ipc=2, iterations=0, model="ConvNetD2", **settings)
    start = METHODS[method].distill(digits8, config, progress=False).images
    assert (sets["off"] - start).abs().max() > 1e-2  # the two iterations moved the set well past the tolerance
    torch.testing.assert_close(sets["on"], sets["off"], rtol=1e-4, atol=1e-4)


def test_evaluation_compiled_and_eager_agree(digits8):
    syn = (digits8.train_images[:50], digits8.train_labels[:50])
    results = {}
    for mode in ("off", "on"):
        with use_compile(mode):
            results[mode] = evaluate(syn, digits8, "ConvNetD2", preset="quick", runs=2, epochs=5, progress=False)
    report = compile_report()
    assert report["train_step"]["compiled"] and report["eval_forward"]["compiled"]
    assert abs(results["on"].mean - results["off"].mean) <= max(results["on"].std, results["off"].std, 0.01)


def test_bf16_autocast_runs_the_path_in_bf16_and_returns_fp32(monkeypatch):
    seen = []

    def probe(net, x):
        out = net.embed(x)
        seen.append(out.dtype)
        return out
    net, x = get_network("ConvNetD2", 1, 10, (8, 8)), torch.randn(4, 1, 8, 8)
    with use_compile("off"), compiled.use_autocast("bf16"):
        out = CompiledCall(probe, "embed")(net, x)
    assert seen == [torch.bfloat16] and out.dtype == torch.float32
    torch.testing.assert_close(out, net.embed(x), rtol=0.05, atol=0.05)  # bf16 rounding, not another function
    monkeypatch.setenv("DDFAST_AUTOCAST", "fp8")
    with pytest.raises(ValueError, match="DDFAST_AUTOCAST"):
        compiled.autocast_mode()
    with pytest.raises(ValueError, match="autocast must be one of"):
        with compiled.use_autocast("fp16"):
            pass
