"""Benchmark one outer iteration of the DD methods: ddfast's method code vs the reference structure.

Cases, ConvNet-3 on random data of CIFAR-10 shapes (3x32x32) and of Fashion-MNIST shapes (1x28x28, DC's
padding 3; sre2l and delt: CIFAR-10 only, their ResNet-18 teacher is CIFAR's), 10 classes. The cases with
compiled network paths (dc, dsa, lcs_gm, dm, dream, eval) time ddfast twice, eager and with ``compile on``
(ddfast.compiled; the first, compiling iteration is the warm-up, its compilation seconds are recorded apart as
compile_s):
  dc, dsa  one DC (no augmentation) or DSA outer iteration with DC's default loops for the IPC (quick: IPC 1,
        loops (1, 1): one matching step; full: IPC 1 and IPC 10, loops (10, 50): ten matching steps and 450
        epochs of network training on the set between them); ddfast = ddfast.methods.dc (per_class_gradients +
        one grad_distance call + fused DSA) vs DC main.py's body (per-class loops, DiffAugment, match_loss,
        epoch('train')).
  lcs_gm one label-cycle-shifting GM round at IPC 10 on its fixed pre-trained network: ddfast.methods.lcs_gm vs
        DC's per-class matching step with shifted labels plus a per-class DM term and the EMA.
  dm    one DM iteration (fresh network, Siamese DSA per class, embeddings, class-mean loss, image step)
        at IPC 10; ddfast = ddfast.methods.dm (fused DSA, class_mean_distance, per-device forward).
  eval  one DC-protocol evaluation run: a fresh ConvNet-3 trained on an IPC 10 set (100 images) for a fixed
        number of epochs (quick 20, full 100) with per-image DSA, then tested on 2,000 images; ddfast =
        ddfast.evaluate (runs=1) vs DC's evaluate_synset loop.
  dream one DREAM+ outer iteration at IPC 10 (fresh network trained one epoch on the real data, then
        ``inner_steps`` 10 matching steps with one k-means query of every class, k = batch_real, and the
        network trained on 256 real samples after each step) on 500 real images per class (quick: 200,
        k 64); ddfast = ddfast.methods.dream (one class-batched kmeans + nearest_to_centroids call, batched
        per-class gradients, one grad_distance and one class_mean_distance call, fused DSA) vs DREAM's
        per-class loop (fast_pytorch_kmeans-style Lloyd per class, DiffAugment, per-class losses).
  mtt   one MTT iteration (N student steps on the whole IPC 10 set with per-image DSA, matching loss,
        image and lr step); ddfast = ddfast.methods.mtt (adjoint unroll) vs MTT's create_graph unroll.
  ast   the same with AST's student: momentum 0.9, balanced loss, one intermediate target at N/2, weight
        perturbation; ddfast = ddfast.methods.ast (adjoint unroll with momentum and return_steps) vs AST's
        distill.py body (create_graph unroll with momentum and the middle loss).
  seqmatch  one iteration on SeqMatch's second subset (5 learnable images per class, the first 5 frozen in
        front, minibatches of 50 from the concatenation); ddfast = its match_trajectories with the frozen
        rows vs seqmatch-mtt's create_graph unroll over the concatenation.
  The trajectory cases (mtt, ast, seqmatch) also record the peak memory of one iteration.
  sre2l one SRe2L recover step on ResNet-18 (CIFAR stem, running statistics set away from 0 and 1) for a batch
        of 100 (IPC 10); ddfast = ddfast.methods.sre2l (BNStatHooks: one fused bn_stat_loss call) vs SRe2L's
        loop body (one BNFeatureHook graph per BatchNorm layer); both use ddfast's crop + flip + jitter.
  delt  the synthesis time of that batch: DELT's EarlyLate recover (8 rounds) vs SRe2L's, both ddfast, same
        steps per batch (full: 16, quick: 8), real init for both (DELT's ranking is left out: it is one teacher
        pass over the real pool); records the image-iterations of each. Full runs also time the digits
        settings (ConvNetBN teacher, 1000 steps, IPC 10 and 50, batches of 100).
Both sides run the same hyperparameters; the time is the median per iteration after one warm-up.
Results: bench/results/<device>.jsonl (op "methods").

Usage: python bench/bench_methods.py [--device cpu|cuda] [--quick]
       [--cases dc,dsa,lcs_gm,dm,dream,mtt,ast,seqmatch,sre2l,delt,eval]
       [--out DIR]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ddfast.compiled import compile_report, use_compile  # noqa: E402
from ddfast.data import ImageDataset  # noqa: E402
from ddfast.methods import METHODS, dc, make_config, seqmatch  # noqa: E402
from ddfast.methods.mtt import Student, match_trajectories  # noqa: E402
from ddfast.methods import _common as common  # noqa: E402
from ddfast.models import get_network  # noqa: E402
from ddfast.ops.unroll import FlatModel  # noqa: E402

from bench.baselines import method_steps  # noqa: E402
from bench.common import bench_main, peak_memory, peak_rss_child, synchronize  # noqa: E402

OP = "methods"
CLASSES = 10


SHAPES = {"cifar10": (3, 32, 32), "fashion_mnist": (1, 28, 28)}


def fake_data(device, per_class: int, dataset: str = "cifar10", test_per_class: int = 0) -> ImageDataset:
    """Random images of ``dataset``'s shape (:data:`SHAPES`), ``per_class`` training (and ``test_per_class`` test)
    images per class."""
    g = torch.Generator().manual_seed(0)
    shape = SHAPES[dataset]
    labels = torch.arange(CLASSES).repeat_interleave(per_class)
    test_labels = torch.arange(CLASSES).repeat_interleave(test_per_class)
    return ImageDataset(name=dataset, train_images=torch.randn(len(labels), *shape, generator=g).to(device),
                        train_labels=labels.to(device),
                        test_images=torch.randn(len(test_labels), *shape, generator=g).to(device),
                        test_labels=test_labels.to(device), num_classes=CLASSES, channels=shape[0],
                        im_size=shape[1:], class_names=[str(c) for c in range(CLASSES)], mean=(0.0,) * shape[0],
                        std=(1.0,) * shape[0], device=torch.device(device))


def fake_cifar(device, per_class: int) -> ImageDataset:
    return fake_data(device, per_class, "cifar10")


def ddfast_iteration_seconds(method: str, data, repeats: int, *args, compile: str = "off", **settings) -> float:
    """Median seconds per iteration of the method's own loop (the first iteration is the warm-up) with compile
    setting ``compile``."""
    marks = []

    def mark(_it, _state):  # wall time after the device finished the iteration's queued work
        synchronize(data.device)
        marks.append(time.perf_counter())

    config = make_config(method, data.name, iterations=repeats + 1, **settings)
    with use_compile(compile):
        METHODS[method].distill(data, config, *args, device=data.device, progress=False, callback=mark)
    return statistics.median(b - a for a, b in zip(marks, marks[1:]))


def ddfast_both(method: str, data, repeats: int, *args, **settings) -> dict:
    """Eager and compiled median seconds per iteration of the method, and the compiled run's compilation
    seconds (every path's first call, from a cold Dynamo cache: what a fresh process pays)."""
    torch._dynamo.reset()
    compile_report(reset=True)
    eager = ddfast_iteration_seconds(method, data, repeats, *args, compile="off", **settings)
    compile_report(reset=True)
    compiled = ddfast_iteration_seconds(method, data, repeats, *args, compile="on", **settings)
    compile_s = sum(entry["compile_seconds"] for entry in compile_report(reset=True).values())
    return {"eager": eager, "compiled": compiled, "compile_s": compile_s}


def reference_iteration_seconds(step, repeats: int, device) -> float:
    times = []
    for it in range(repeats + 1):
        synchronize(device)
        start = time.perf_counter()
        step(it)
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times[1:])


def _real_per_class(data, n: int, it: int):
    return [data.train_images[data.indices_per_class[c][:n].to(data.device)] for c in range(CLASSES)]


def _record(rec, case, size, ours_s, reference_s, **extra):
    """One row; ``ours_s`` is a number (eager only) or :func:`ddfast_both`'s dict (eager, compiled, compile_s)."""
    both = ours_s if isinstance(ours_s, dict) else {"eager": ours_s, "compiled": None, "compile_s": None}
    compiled = both["compiled"]
    row = rec.record(op=OP, case=case, backend="ddfast", strategy="method", size=size,
                     median_ms=1000 * both["eager"], baseline="reference structure", baseline_ms=1000 * reference_s,
                     speedup=reference_s / both["eager"],
                     compiled_ms=None if compiled is None else 1000 * compiled,
                     compiled_speedup=None if compiled is None else reference_s / compiled,
                     compile_s=both["compile_s"], **extra)
    line = (f"{case:5s} {size:34s} ddfast {row['median_ms']:9.1f} ms   reference {row['baseline_ms']:9.1f} ms   "
            f"x{row['speedup']:.2f}")
    if compiled is not None:
        line += f"   compiled {row['compiled_ms']:9.1f} ms x{row['compiled_speedup']:.2f} (compile {both['compile_s']:.0f} s)"
    print(line, flush=True)


def _bench_gradient_matching(rec, device, quick, case: str):
    """DC (``case`` "dc", no augmentation) or DSA: one outer iteration with DC's default loops for the IPC."""
    batch_real = 64 if quick else 256
    repeats = 1 if quick else 2
    dsa = case == "dsa"
    for dataset in SHAPES:
        data = fake_data(device, batch_real, dataset)
        for ipc in (1,) if quick else (1, 10):
            outer_loop, inner_loop = dc.LOOPS[ipc]
            ours = ddfast_both(case, data, repeats, ipc=ipc, batch_real=batch_real)
            syn = torch.randn(CLASSES * ipc, *SHAPES[dataset], device=device, requires_grad=True)
            opt = torch.optim.SGD([syn], lr=0.1, momentum=0.5)

            def step(it):
                net = common.seeded_network("ConvNet", data.channels, CLASSES, data.im_size, it, device)
                method_steps.dc_iteration(net, lambda ol: _real_per_class(data, batch_real, it), syn, ipc, opt,
                                          outer_loop=outer_loop, inner_loop=inner_loop, batch_train=256, lr_net=0.01,
                                          dsa=dsa, seed=it)
            _record(rec, case, f"{dataset}-ipc{ipc}-loops{outer_loop}x{inner_loop}-real{batch_real}", ours,
                    reference_iteration_seconds(step, repeats, device), ipc=ipc, batch_real=batch_real,
                    outer_loop=outer_loop, inner_loop=inner_loop, dataset_shape=dataset, dsa=dsa)


def bench_lcs_gm(rec, device, quick):
    """One round of label-cycle-shifting GM at IPC 10 on its fixed pre-trained network (the pre-training, once per
    run, left out): shifted-label gradient matching of every class, the DM term, the EMA."""
    batch_real = 64 if quick else 256
    repeats = 2 if quick else 3
    ipc = 10
    for dataset in SHAPES:
        data = fake_data(device, batch_real, dataset)
        ours = ddfast_both("lcs_gm", data, repeats, ipc=ipc, batch_real=batch_real, pretrain_epochs=1)
        config = make_config("lcs_gm", data.name, ipc=ipc)
        syn = torch.randn(CLASSES * ipc, *SHAPES[dataset], device=device, requires_grad=True)
        ema = syn.detach().clone()
        opt = torch.optim.SGD([syn], lr=config.lr_img, momentum=config.momentum)
        net = common.seeded_network("ConvNet", data.channels, CLASSES, data.im_size, 0, device)

        def step(it):
            shift = 1 + it % (CLASSES - 1)
            method_steps.dc_matching_step(net, _real_per_class(data, batch_real, it), syn, ipc, opt, True, it,
                                          shift=shift, dm_weight=config.dm_weight)
            with torch.no_grad():
                ema.mul_(config.ema).add_(syn.detach(), alpha=1.0 - config.ema)
        _record(rec, "lcs_gm", f"{dataset}-ipc{ipc}-real{batch_real}", ours,
                reference_iteration_seconds(step, repeats, device), ipc=ipc, batch_real=batch_real,
                dataset_shape=dataset)


def bench_dm(rec, device, quick):
    batch_real = 64 if quick else 256
    repeats = 2 if quick else 3
    ipc = 10
    for dataset in SHAPES:
        data = fake_data(device, batch_real, dataset)
        ours = ddfast_both("dm", data, repeats, ipc=ipc, batch_real=batch_real)
        syn = torch.randn(CLASSES * ipc, *SHAPES[dataset], device=device, requires_grad=True)
        opt = torch.optim.SGD([syn], lr=1.0, momentum=0.5)

        def step(it):
            net = common.seeded_network("ConvNet", data.channels, CLASSES, data.im_size, it, device)
            method_steps.dm_step(net, _real_per_class(data, batch_real, it), syn, ipc, opt, it)
        _record(rec, "dm", f"{dataset}-ipc{ipc}-real{batch_real}", ours,
                reference_iteration_seconds(step, repeats, device), ipc=ipc, batch_real=batch_real,
                dataset_shape=dataset)


def bench_eval(rec, device, quick):
    """One DC-protocol evaluation run (train on an IPC 10 set, test on 2,000 images): ddfast.evaluate eager and
    compiled (the compiled side runs once to compile, then is timed) vs DC's evaluate_synset loop."""
    from ddfast.eval import default_augment, evaluate

    epochs, ipc = (20 if quick else 100), 10
    for dataset in SHAPES:
        data = fake_data(device, ipc, dataset, test_per_class=200)
        syn = (data.train_images, data.train_labels)

        def ours(mode):
            with use_compile(mode):
                synchronize(device)
                start = time.perf_counter()
                evaluate(syn, data, "ConvNet", preset="quick", runs=1, epochs=epochs, augment=default_augment("dc"),
                         seed=0, device=device, progress=False)
                synchronize(device)
                return time.perf_counter() - start

        torch._dynamo.reset()
        compile_report(reset=True)
        eager = ours("off")
        first = ours("on")
        compile_s = sum(entry["compile_seconds"] for entry in compile_report(reset=True).values())
        compiled = ours("on")

        def step(it):
            net = common.seeded_network("ConvNet", data.channels, CLASSES, data.im_size, it, device)
            method_steps.dc_evaluate(net, data.train_images, data.train_labels, data.test_images, data.test_labels,
                                     epochs=epochs)
        reference = reference_iteration_seconds(step, 1, device)
        _record(rec, "eval", f"{dataset}-ipc{ipc}-epochs{epochs}-test2000",
                {"eager": eager, "compiled": compiled, "compile_s": compile_s}, reference, ipc=ipc, epochs=epochs,
                dataset_shape=dataset, first_compiled_ms=1000 * first)


def bench_dream(rec, device, quick):
    per_class, k = (200, 64) if quick else (500, 128)
    repeats = 1 if quick else 2
    ipc, inner_steps, net_samples = 10, 10, 256
    for dataset in SHAPES:
        data = fake_data(device, per_class, dataset)
        ours = ddfast_both("dream", data, repeats, ipc=ipc, batch_real=k, inner_steps=inner_steps,
                           interval=inner_steps, net_samples=net_samples, pretrain_epochs=1, factor=1)
        syn = torch.rand(CLASSES * ipc, *SHAPES[dataset], device=device, requires_grad=True)
        opt = torch.optim.SGD([syn], lr=0.005, momentum=0.5)

        def step(it):
            torch.manual_seed(it)
            net = common.seeded_network("ConvNet", data.channels, CLASSES, data.im_size, it, device)
            method_steps.dream_iteration(net, data.train_images, data.train_labels, syn, ipc, opt,
                                         inner_steps=inner_steps, interval=inner_steps, batch_real=k,
                                         net_samples=net_samples, seed=it)
        _record(rec, "dream", f"{dataset}-ipc{ipc}-real{per_class}-k{k}-steps{inner_steps}", ours,
                reference_iteration_seconds(step, repeats, device), ipc=ipc, batch_real=k, inner_steps=inner_steps,
                real_per_class=per_class, dataset_shape=dataset)


def _expert_trajectory(device, dataset: str = "cifar10", epochs: int = 3):
    """A ConvNet-3 'trajectory' of small random steps (the speed of an iteration does not depend on the values)."""
    torch.manual_seed(0)
    channels, *im_size = SHAPES[dataset]
    net = get_network("ConvNet", channels, CLASSES, tuple(im_size))
    snapshot = [p.detach().clone() for p in net.parameters()]
    return net.to(device), [[p + 0.01 * k * torch.randn_like(p) for p in snapshot] for k in range(epochs)]


# The trajectory cases: ddfast's method settings (seqmatch: its second subset's) and the reference step's options.
TRAJECTORY_CASES = {
    "mtt": ({"max_start_epoch": 1}, {}),
    "ast": ({"max_start_epoch": 1, "init": "real", "student_momentum": 0.9, "balanced": True, "intermediate": True,
             "perturb": 1.0},
            {"momentum": 0.9, "loss_scale": 1.2920, "perturb": 1.0}),  # log_5(8): the scale at t = T // 2
    "seqmatch": ({"num_subsets": 2, "intervals": ((0, 3), (0, 3))}, {}),
}


def trajectory_workload(case: str, side: str, steps: int, ipc: int, device: str, dataset: str = "cifar10",
                        iterations: int = 1, callback=None):
    """``iterations`` outer iterations of ``case`` (mtt, ast, seqmatch: its second subset, the first frozen) at
    ``dataset``'s shapes, as a zero-argument callable: ddfast's method (``callback`` after each iteration) or one
    reference step (module level, so a child process can build it for the peak-memory measurement)."""
    net, trajectory = _expert_trajectory(device, dataset)
    data = fake_data(device, ipc, dataset)
    shape = SHAPES[dataset]
    config = make_config(case, data.name, ipc=ipc, iterations=iterations, syn_steps=steps, expert_epochs=2,
                         **TRAJECTORY_CASES[case][0])
    if side == "ddfast" and case != "seqmatch":
        return lambda: METHODS[case].distill(data, config, [trajectory], device=data.device, progress=False,
                                             callback=callback)
    half = ipc // 2
    learn_ipc = half if case == "seqmatch" else ipc
    labels = torch.arange(CLASSES, device=device).repeat_interleave(learn_ipc)
    frozen = torch.randn(CLASSES * half, *shape, device=device)
    if side == "ddfast":  # SeqMatch's second subset through the loop the method runs
        real = common.RealData.of(data, device)
        stage = seqmatch.stage_config(config, 1, half, half * CLASSES, ipc * CLASSES)

        def run():
            learn = torch.randn(CLASSES * half, *shape, device=device, requires_grad=True)
            return match_trajectories(real, stage, [trajectory], learn, labels, method="seqmatch-s2",
                                      student=Student(start_range=(0, 1)), frozen=(frozen, labels), progress=False,
                                      callback=callback)
        return run
    fm = FlatModel(net)
    start, middle, target = (fm.flatten(s).to(device) for s in trajectory)
    syn = torch.randn(CLASSES * learn_ipc, *shape, device=device, requires_grad=True)
    lr = torch.tensor(0.01, device=device, requires_grad=True)
    opt_img = torch.optim.SGD([syn], lr=1000.0, momentum=0.5)
    opt_lr = torch.optim.SGD([lr], lr=1e-5, momentum=0.5)
    options = dict(TRAJECTORY_CASES[case][1])
    if case == "ast":
        options["middle"] = [(steps // 2, middle)]
    if case == "seqmatch":
        options.update(frozen=frozen, frozen_labels=labels, batch_syn=CLASSES * half)
    return lambda: method_steps.mtt_step(fm, start, target, syn, labels, lr, steps, opt_img, opt_lr, 0, **options)


def _median_seconds(fn, repeats: int, device) -> float:
    return reference_iteration_seconds(lambda _it: fn(), repeats, device)


def bench_trajectory(rec, device, quick, case: str):
    """One outer iteration of MTT, AST or SeqMatch's second subset, IPC 10, ``steps`` inner steps: median time,
    and peak memory (CUDA allocator peak, or the peak resident growth of a child process on the CPU)."""
    steps = 5 if quick else 20
    ipc = 10
    repeats = 2 if quick else 3
    for dataset in SHAPES:
        marks = []  # ddfast: the method's own loop, timed between iterations (the set-up left out)

        def mark(_it, _state):
            synchronize(device)
            marks.append(time.perf_counter())
        trajectory_workload(case, "ddfast", steps, ipc, str(device), dataset, iterations=repeats + 1,
                            callback=mark)()
        ours = statistics.median(b - a for a, b in zip(marks, marks[1:]))
        reference = _median_seconds(trajectory_workload(case, "reference", steps, ipc, str(device), dataset), repeats,
                                    device)
        memory = {}
        for side in ("ddfast", "reference"):
            if device.type == "cuda":
                memory[side] = peak_memory(trajectory_workload(case, side, steps, ipc, str(device), dataset), device)
            else:
                memory[side] = peak_rss_child(trajectory_workload, case, side, steps, ipc, "cpu", dataset,
                                              warmup_args=(case, side, 1, ipc, "cpu", dataset))
        _record(rec, case, f"{dataset}-ipc{ipc}-steps{steps}", ours, reference, ipc=ipc, syn_steps=steps,
                peak_mem_bytes=memory["ddfast"], baseline_peak_mem_bytes=memory["reference"], dataset_shape=dataset)
        print(f"     peak memory: ddfast {memory['ddfast'] / 2**20:.0f} MiB, "
              f"reference {memory['reference'] / 2**20:.0f} MiB")


def _recover_setup(device):
    from bench.bench_bn_stat_loss import teacher as resnet_teacher

    return fake_cifar(device, 10), resnet_teacher(device)


def bench_sre2l(rec, device, quick):
    from ddfast.crops import batch_crop
    from ddfast.methods.sre2l import pixel_bounds
    from bench.baselines import sre2l_bn_loop

    data, teacher = _recover_setup(device)
    repeats, ipc = (2 if quick else 3), 10
    ours = ddfast_iteration_seconds("sre2l", data, repeats, teacher, ipc=ipc)
    config = make_config("sre2l", "cifar10", ipc=ipc)
    inputs = torch.randn(CLASSES * ipc, 3, 32, 32, device=device, requires_grad=True)
    labels = common.class_labels(CLASSES, ipc, device)
    optimizer = torch.optim.Adam([inputs], lr=config.lr, betas=(config.beta1, config.beta2), eps=1e-8)
    low, high = pixel_bounds(data, device)
    hooks = sre2l_bn_loop.install(teacher)

    def step(it):
        def augment(x):
            return batch_crop(x, common.generator(0, "aug", it), (config.min_crop, config.max_crop), config.flip,
                              config.jitter)
        method_steps.sre2l_recover_step(teacher, hooks, inputs, labels, optimizer, augment, config.lr, config.r_bn,
                                        low, high)
    try:
        reference = reference_iteration_seconds(step, repeats, device)
    finally:
        for h in hooks:
            h.close()
    _record(rec, "sre2l", f"resnet18-batch{CLASSES * ipc}", ours, reference, ipc=ipc, model="ResNet18")


def _synthesis(rec, device, data, teacher, setting: str, ipc: int, steps: int, rounds: int) -> None:
    """SRe2L's and DELT's recover of ``ipc`` images per class (real init for both), wall time and image-iterations."""
    from ddfast.methods.delt import join_iterations

    seconds, compute = {}, {}
    for method, extra in (("sre2l", {"init": "real"}), ("delt", {"round_iterations": steps // rounds, "init": "real"})):
        config = make_config(method, data.name, ipc=ipc, iterations=steps, **extra)
        synchronize(device)
        start = time.perf_counter()
        syn = METHODS[method].distill(data, config, teacher, device=device, progress=False)
        synchronize(device)
        seconds[method] = time.perf_counter() - start
        compute[method] = syn.metadata["compute"]["image_iterations"]
    config = make_config("delt", data.name, ipc=ipc, iterations=steps, round_iterations=steps // rounds)
    predicted = 1 - (steps - join_iterations(data.num_classes, config)).sum().item() / (data.num_classes * ipc * steps)
    row = rec.record(op=OP, case="delt", backend="ddfast", strategy="method", size=f"{setting}-ipc{ipc}-steps{steps}",
                     median_ms=1000 * seconds["delt"], baseline="SRe2L recover (ddfast)",
                     baseline_ms=1000 * seconds["sre2l"], speedup=seconds["sre2l"] / seconds["delt"],
                     image_iterations=compute["delt"], baseline_image_iterations=compute["sre2l"],
                     predicted_saving=predicted, ipc=ipc, rounds=rounds)
    print(f"delt {row['size']:28s} DELT {row['median_ms']:9.1f} ms   SRe2L {row['baseline_ms']:9.1f} ms   "
          f"time saved {1 - seconds['delt'] / seconds['sre2l']:.1%}, image-iterations saved "
          f"{1 - compute['delt'] / compute['sre2l']:.1%} (predicted {predicted:.1%})", flush=True)


def bench_delt(rec, device, quick):
    data, teacher = _recover_setup(device)
    _synthesis(rec, device, data, teacher, "cifar10-resnet18-batch100", 10, 8 if quick else 16, 8)
    if not quick:  # the digits runs' settings (1000 steps, 8 rounds), a ConvNetBN teacher
        from ddfast.data import load_dataset

        digits = load_dataset("digits", device=device)
        net = common.seeded_network("ConvNetBN", digits.channels, digits.num_classes, digits.im_size, 0, device)
        for ipc in (10, 50):
            _synthesis(rec, device, digits, net.eval(), "digits-convnetbn-batch100", ipc, 1000, 8)


if __name__ == "__main__":
    trajectory_cases = {case: (lambda rec, device, quick, case=case: bench_trajectory(rec, device, quick, case))
                        for case in TRAJECTORY_CASES}
    gradient_matching = {case: (lambda rec, device, quick, case=case: _bench_gradient_matching(rec, device, quick, case))
                         for case in ("dc", "dsa")}
    bench_main(__doc__, {**gradient_matching, "lcs_gm": bench_lcs_gm, "dm": bench_dm, "dream": bench_dream,
                         **trajectory_cases, "sre2l": bench_sre2l, "delt": bench_delt, "eval": bench_eval},
               lambda rec, device: f"methods on {rec.common['device']}, torch {rec.common['torch']}")
