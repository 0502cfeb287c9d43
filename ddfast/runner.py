"""What the ``ddfast distill / eval / buffer / quickstart`` commands do, as functions (the CLI parses
arguments and calls these; tests call them directly).

A distill run writes into its folder: ``set.pt`` (the :class:`ddfast.SyntheticSet`), ``set.png`` (one
row per class), ``loss.png`` (the matching loss per iteration), ``accuracy.png`` (with ``eval_every``), ``checkpoint.pt`` (every
``checkpoint_every`` iterations; ``resume=True`` continues from it) and ``results.json``: method,
dataset, ipc, iterations, seconds, and the accuracy (mean, std, runs, preset) of the distilled set and
of a random real subset of the same size under the same evaluation protocol, with what ran it (ddfast version
and commit, torch/triton versions, device, the backend each op ran: docs/semantics.md#resultsjson-fields).

Every run function checks its arguments and settings first (:mod:`ddfast.usage`, raising
:class:`ddfast.UsageError`), before it loads data or writes a folder.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

import torch

from ._io import atomic_write_text, load_checked, payload_checksum, run_folder
from .backends import backends_ran, use_backend
from .compiled import compile_report, use_autocast, use_compile
from .data import load_dataset
from .eval import (default_augment, embedding_diversity, evaluate, paper_protocol, random_real_baseline,
                   random_real_set, test_accuracy)
from .experts import expert_files, load_buffer, next_buffer_path, save_buffer, train_experts
from .methods import (METHODS, Checkpointing, class_labels, derive_seed, make_config, per_sample, read_checkpoint,
                      teacher_recipe)
from .methods.sre2l import load_teacher, save_teacher, squeeze
from .info import device_name, provenance, versions
from .models import get_network
from .synthetic import SyntheticSet, from_dc, from_mtt, plot_curves
from .usage import check_run_arguments, check_settings

EXPERTS_PER_FILE = 10  # MTT buffer.py's save_interval: experts per replay_buffer_{n}.pt


def _require_cli_extras() -> None:
    """The run folders need matplotlib (PNGs) and tqdm (progress); fail before any work, not after it."""
    import importlib.util

    missing = [m for m in ("matplotlib", "tqdm") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"ddfast distill needs {', '.join(missing)}: pip install {' '.join(missing)} (in a ddfast "
                          f"checkout: pip install -e '.[cli]' --no-build-isolation)")


def _accuracy(result) -> dict:
    return {"mean": result.mean, "std": result.std, "runs": result.runs, "preset": result.preset,
            "model": result.model, "epochs": result.epochs, "accuracies": list(result.accuracies)}


def protocol_settings(data, teacher=None, temperature: float = 20.0, *, preset: str = "full", method: str = "",
                      model: str = "ConvNet") -> dict:
    """The evaluation protocol's arguments of :func:`ddfast.evaluate`: the DC protocol (DSA; with preset "paper" the
    runs, epochs and augmentation of ``method``'s reference code base, :func:`ddfast.eval.paper_protocol`), or with
    a ``teacher`` the KD protocol (the teacher's soft labels at ``temperature``, random-resized crop + flip)."""
    if teacher is None:
        if preset == "paper":
            return {"protocol": "dc", **paper_protocol(method, data, model)}
        return {"protocol": "dc", "augment": default_augment("dc", data)}
    return {"protocol": "kd", "augment": default_augment("kd", data), "teacher": teacher, "temperature": temperature}


def evaluation_arguments(data, model: str, method: str, *, preset: str, runs: int | None, epochs: int | None,
                         teacher=None, temperature: float = 20.0, **common) -> dict:
    """The keyword arguments of :func:`ddfast.evaluate` and :func:`ddfast.eval.random_real_baseline` for a set made
    by ``method``: :func:`protocol_settings`, with ``runs``/``epochs`` where given, else the paper preset's for the
    method, else the preset's; ``common``: seed, device, progress."""
    settings = protocol_settings(data, teacher, temperature, preset=preset, method=method, model=model)
    paper_runs, paper_epochs = settings.pop("runs", None), settings.pop("epochs", None)
    return {"preset": preset, "runs": runs or paper_runs, "epochs": epochs or paper_epochs, **settings, **common}


def evaluate_with_baseline(syn: SyntheticSet, data, *, ipc: int | None = None, model: str = "ConvNet",
                           preset: str = "quick", seed: int = 0, runs: int | None = None, epochs: int | None = None,
                           device=None, progress: bool = True, teacher=None, temperature: float = 20.0) -> dict:
    """The DC protocol (with ``teacher``: the KD protocol, both sets relabelled by that teacher) on ``syn`` and on
    random real subsets of ``ipc`` images per class (default the set's own; a multi-formation set passes its
    storage budget), same preset, seed and model (``runs``/``epochs`` override the preset's)."""
    kwargs = evaluation_arguments(data, model, str(syn.metadata.get("method", "")), preset=preset, runs=runs,
                                  epochs=epochs, teacher=teacher, temperature=temperature, seed=seed, device=device,
                                  progress=progress)
    ours = evaluate(syn, data, model, **kwargs)
    baseline = random_real_baseline(data, ipc or syn.ipc, model, **kwargs)
    return {"distilled": _accuracy(ours), "random_real": _accuracy(baseline)}


def resumed_curve(path: Path, resumed: dict | None) -> list[tuple[int, float]]:
    """The accuracy curve a resumed run continues: the points of ``path`` (written as they are measured) up to the
    checkpoint's iteration; a fresh run starts an empty one."""
    if resumed is None or not path.exists():
        return []
    done = resumed["state"]["iteration"]
    return [(p["iteration"], p["accuracy"]) for p in json.loads(path.read_text()) if p["iteration"] <= done]


@contextlib.contextmanager
def job_run_folder(out, ctx, *, force: bool = False):
    """The run folder ``out`` held by :func:`ddfast._io.run_folder` for the block (rank 0 takes the lock; every
    rank stops if it cannot); yields it as a Path."""
    with contextlib.ExitStack() as stack:
        refused = None
        if ctx.is_main:
            try:
                stack.enter_context(run_folder(out, force=force))
            except OSError as exc:
                refused = exc
        failed = ctx.all_reduce_(torch.tensor([float(refused is not None)], dtype=torch.float64, device=ctx.device))
        if refused is not None:
            raise refused
        if float(failed):
            raise RuntimeError(f"rank {ctx.rank}: rank 0 could not take the run folder {os.fspath(out)!r} (its error "
                               f"says why)")
        yield Path(out)


def data_fingerprint(data) -> dict:
    """What a resume checks about the data: its metadata, the training split's shape and the checksum of its
    labels and of up to 64 evenly spaced images."""
    record = data.metadata()
    images = data.train_images
    if images is not None:
        picks = torch.linspace(0, len(images) - 1, min(64, len(images))).long().to(images.device)
        record["train_shape"] = list(images.shape)
        record["train_checksum"] = payload_checksum({"labels": data.train_labels, "sample": images[picks]})
    return record


def buffer_record(folder) -> dict:
    """The expert files of a buffer folder with their sizes: what a resumed trajectory method checks."""
    if not os.path.isdir(folder):
        return {}  # the method says what is missing
    return {os.path.basename(path): os.path.getsize(path) for path in expert_files(folder)}


def job_device(ctx, device=None) -> torch.device:
    """``device``, else this rank's accelerator under torch.distributed, else CUDA when available, else the CPU."""
    if ctx.backend == "nccl" and device and torch.device(device) != ctx.device:
        raise ValueError(f"device: rank {ctx.rank} runs nccl on {ctx.device} (its LOCAL_RANK's GPU), not {device}; "
                         f"leave --device out under torchrun with GPUs")
    if device:
        return torch.device(device)
    if ctx.distributed:
        return ctx.device
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def distill_run(method: str, dataset: str, ipc: int, out: str | os.PathLike, *, data_root=None,
                iterations: int | None = None, seed: int = 0, device: str | None = None, backend: str = "auto",
                eval_preset: str = "quick", eval_model: str = "ConvNet", eval_runs: int | None = None,
                eval_epochs: int | None = None, buffer=None, teacher=None, resume: bool = False,
                checkpoint_every: int = 50, eval_every: int = 0, settings: dict | None = None, zca: bool = False,
                progress: bool = True, data=None, compile: str = "auto", autocast: str = "off",
                force: bool = False) -> dict | None:
    """Distil, save, plot and evaluate one run (see the module docstring); returns the results dict.

    The run holds ``out`` (:func:`job_run_folder`; ``force`` takes it from another run). ``resume`` continues from
    ``out/checkpoint.pt`` only if that checkpoint was written with the same config (iterations may grow, not fall
    below its progress), data, backend, compile and autocast settings, device type and buffer files; results.json
    records the ddfast version and commit of this run and, as ``resumed_from``, of the checkpoint's.

    Under ``torchrun`` (:mod:`ddfast.distributed`) every rank distils its share (the method's sharding mode) and
    rank 0 alone writes the folder and evaluates; the other ranks return None. A teacher must exist there already
    (training it on one rank would keep the others waiting in a collective past its timeout).

    SRe2L/DELT (methods that need a teacher) recover from the teacher at ``teacher`` (a path; default
    ``out/teacher.pt``), trained there by :func:`ensure_teacher` when the file does not exist, and are evaluated
    by the KD protocol with that teacher, as is their random-real baseline.

    ``eval_every`` > 0 evaluates the current set every that many iterations (one run of the quick
    preset, ``eval_epochs`` if given, seed ``seed``) and plots the curve to ``accuracy.png``; results.json keeps it as ``curve``.

    ``compile`` (:mod:`ddfast.compiled`: auto, on, off) applies to the distillation and the evaluation; results.json
    records, per compiled path, whether it compiled and its compilation seconds, and the distillation's seconds
    without them. ``autocast="bf16"`` runs the distillation's network paths in bf16 (the evaluation stays fp32, so
    the accuracy measures the set)."""
    check_run_arguments(method=method, ipc=ipc, iterations=iterations, seed=seed, device=device, backend=backend,
                        eval_preset=eval_preset, eval_model=eval_model, eval_runs=eval_runs, eval_epochs=eval_epochs,
                        checkpoint_every=checkpoint_every, eval_every=eval_every, compile=compile, autocast=autocast)
    settings = check_settings(method, settings or {})
    spec = METHODS[method]
    if spec.needs_buffer and buffer is None:
        raise ValueError(f"method {method!r} needs expert trajectories: pass --buffer DIR (made by `ddfast buffer`)")
    from . import distributed

    ctx = distributed.context()
    with job_run_folder(out, ctx, force=force) as out:
        device = job_device(ctx, device)
        data = data if data is not None else load_dataset(dataset, data_root, zca=zca, device=device)
        config = make_config(method, data.name, ipc=ipc, iterations=iterations, seed=seed, **settings)
        _require_cli_extras()
        checkpoint = Checkpointing(out / "checkpoint.pt", every=checkpoint_every, resume=resume,
                                   run={"data": data_fingerprint(data), "backend": backend, "compile": compile,
                                        "autocast": autocast, "device": device.type,
                                        "buffer": buffer_record(buffer) if spec.needs_buffer else None},
                                   provenance={**provenance(), "world_size": ctx.world})
        resumed = read_checkpoint(checkpoint, method, config)  # a checkpoint this run cannot continue stops it here
        curve_path = out / "curve.json"
        curve = resumed_curve(curve_path, resumed)
        labels = class_labels(data.num_classes, ipc, "cpu")
        teacher_net, teacher_record = None, None
        if teacher is not None and not spec.needs_teacher:
            raise ValueError(f"method {method!r} does not use a teacher; --teacher is for sre2l and delt")
        if spec.check is not None:
            spec.check(config, data)
        if spec.needs_teacher:
            teacher_path = teacher or out / "teacher.pt"
            if ctx.distributed and not os.path.exists(teacher_path):
                raise FileNotFoundError(f"{method} under torchrun needs its teacher file, and "
                                        f"{os.fspath(teacher_path)!r} does not exist: train it first (`ddfast teacher "
                                        f"--dataset {data.name} --out {os.fspath(teacher_path)}`, one process), so no "
                                        f"rank waits on it in a collective")
            teacher_net, teacher_record = ensure_teacher(data, teacher_path, seed=seed, device=device,
                                                         progress=progress)
        evaluation = protocol_settings(data, teacher_net, getattr(config, "temperature", 20.0))

        seen = [None]  # the previous callback's iteration (SRe2L/DELT on several ranks call back once per round)

        def observe(it, state):
            previous, seen[0] = (it - 1 if seen[0] is None else seen[0]), it
            if eval_every and it // eval_every > previous // eval_every:  # a multiple of eval_every was passed
                lr = state.tensors.get("lr")
                images, current_labels = (state.output() if state.output is not None
                                          else (state.tensors["images"], labels))
                current = SyntheticSet(images.detach().cpu(), current_labels.cpu(),
                                       lr=None if lr is None else lr.detach().cpu(),
                                       metadata={**data.metadata(), "method": method, "ipc": ipc, **state.metadata})
                with use_autocast("off"):  # the curve measures the set, in full precision
                    result = evaluate(current, data, eval_model, preset="quick", runs=1, epochs=eval_epochs, seed=seed,
                                      device=device, progress=False, **evaluation)
                curve.append((it, result.mean))
                if ctx.is_main:  # kept beside the checkpoint, so a resumed run's curve starts where it left off
                    atomic_write_text(curve_path, json.dumps([{"iteration": i, "accuracy": a} for i, a in curve]))

        start = time.perf_counter()
        compile_report(reset=True)
        backends_ran(reset=True)
        with use_backend(backend), use_compile(compile), use_autocast(autocast):
            extra = (buffer,) if spec.needs_buffer else (teacher_net,) if spec.needs_teacher else ()
            syn = spec.distill(data, config, *extra, device=device, checkpoint=checkpoint, progress=progress,
                               callback=observe, ctx=ctx)
        wall = time.perf_counter() - start
        compiled_distill = compile_report(reset=True)
        ran = backends_ran(reset=True)
        # The ranks leave together: a group this run started ends here on every rank at once, before rank 0's final
        # evaluation (which needs no peer), instead of the other ranks tearing it down while rank 0 still works.
        ctx.barrier()
        distributed.destroy()
        if not ctx.is_main:
            return None
        history = load_checked(checkpoint.path, "a ddfast checkpoint")["state"]["history"]  # the last iteration's
        syn.save(out / "set.pt")
        syn.save_grid(out / "set.png", zca=data.zca)
        if history:
            plot_curves(out / "loss.png", {f"{method} matching loss": history},
                        title=f"{method}, {data.name}, IPC {ipc}")
        if curve:
            plot_curves(out / "accuracy.png", {"distilled set, quick preset, 1 run": [100 * a for _, a in curve]},
                        steps=[it for it, _ in curve], ylabel="test accuracy %",
                        title=f"{method}, {data.name}, IPC {ipc}")
        with use_compile(compile):
            accuracy = evaluate_with_baseline(syn, data, ipc=ipc, model=eval_model, preset=eval_preset, seed=seed,
                                              runs=eval_runs, epochs=eval_epochs, device=device, progress=progress,
                                              teacher=teacher_net, temperature=evaluation.get("temperature", 20.0))
        compile_seconds = sum(entry["compile_seconds"] for entry in compiled_distill.values())
        results = {"method": method, "dataset": data.name, "ipc": ipc, "iterations": syn.metadata["iterations"],
                   "seconds": syn.metadata["seconds"],
                   "seconds_without_compile": syn.metadata["seconds"] - compile_seconds,
                   "wall_seconds": wall, "device": str(device), "backend": backend, "backends_ran": ran, "seed": seed,
                   "config": syn.metadata["config"], "protocol": evaluation["protocol"], **accuracy,
                   "compile": {"setting": compile, "autocast": autocast, "distill": compiled_distill,
                               "eval": compile_report(reset=True)},
                   "curve": [{"iteration": it, "accuracy": a} for it, a in curve], "ddfast": provenance(),
                   "environment": {**versions(), "device_name": device_name(device)}, "world_size": ctx.world}
        if resumed is not None:
            results["resumed_from"] = {"iteration": resumed["state"]["iteration"], **resumed.get("provenance", {})}
        if teacher_record is not None:
            results["teacher"] = {k: v for k, v in teacher_record.items() if k != "dataset"}
            results["diversity"] = diversity(teacher_net, syn, data, seed)
        if "compute" in syn.metadata:
            results["compute"] = syn.metadata["compute"]
        atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
        return results


def eval_run(path: str | os.PathLike, dataset: str, *, data_root=None, models=("ConvNet",), preset: str = "full",
             seed: int = 0, device: str | None = None, source: str = "ddfast", lr: float | None = None,
             baseline: bool = True, runs: int | None = None, epochs: int | None = None, zca: bool | None = None,
             teacher=None, temperature: float = 20.0, progress: bool = True, compile: str = "auto") -> dict:
    """Evaluate a saved set (ddfast's ``set.pt``, DC's ``res_*.pt`` with ``source="dc"``, or MTT's
    images/labels files with ``source="mtt"``) on each of ``models``, with the random-real baseline. The
    test data is ZCA-whitened when ``zca`` is True, or (None) when a ddfast set records that it was
    distilled on whitened data. With ``teacher`` (a path written by ``ddfast teacher``) the KD protocol runs with
    that teacher's soft labels at ``temperature``; an SRe2L/DELT set needs one. ``compile``: the evaluation
    networks' setting (:mod:`ddfast.compiled`)."""
    check_run_arguments(source=source, models=list(models), preset=preset, seed=seed, device=device, lr=lr,
                        runs=runs, epochs=epochs, temperature=temperature, compile=compile)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    zca = zca if zca is not None else bool(SyntheticSet.load(path).metadata.get("zca")) if source == "ddfast" else False
    data = load_dataset(dataset, data_root, zca=zca, device=device)
    if source == "ddfast":
        syn = SyntheticSet.load(path)
    elif source == "dc":
        syn = from_dc(path, dataset=data)
    else:
        syn = from_mtt(path, lr=lr, dataset=data)
    made_by = str(syn.metadata.get("method", ""))
    if teacher is None and made_by in METHODS and METHODS[made_by].needs_teacher:
        raise ValueError(f"{os.fspath(path)!r} is a {made_by} set: its evaluation is the KD protocol with the "
                         f"teacher it was recovered from; pass --teacher PATH")
    teacher_net = load_teacher(teacher, data, device)[0] if teacher is not None else None
    results = {"set": os.fspath(path), "dataset": data.name, "ipc": syn.ipc, "protocol": "dc" if teacher is None else "kd",
               "models": {}}
    with use_compile(compile):
        for model in models:
            kwargs = evaluation_arguments(data, model, made_by, preset=preset, runs=runs, epochs=epochs,
                                          teacher=teacher_net, temperature=temperature, seed=seed, device=device,
                                          progress=progress)
            entry = {"distilled": _accuracy(evaluate(syn, data, model, **kwargs))}
            if baseline:
                entry["random_real"] = _accuracy(random_real_baseline(data, syn.ipc, model, **kwargs))
            results["models"][model] = entry
    return results


BUFFER_RECIPES = ("mtt", "ast")


def buffer_run(dataset: str, out: str | os.PathLike, *, data_root=None, experts: int = 10, epochs: int = 50,
               lr: float | None = None, batch_size: int = 256, model: str = "ConvNet", dsa_strategy: str | None = None,
               recipe: str = "mtt", seed: int = 0, device: str | None = None, zca: bool = False,
               progress: bool = True, force: bool = False) -> list[str]:
    """Train expert trajectories and write them as ``replay_buffer_{n}.pt`` files of up to 10 experts each (n
    from the first free index of ``out``); returns the paths written. ``recipe="mtt"``: MTT buffer.py's defaults
    (SGD lr 0.01, no momentum, batch 256, DSA); ``"ast"``: AST's smooth experts
    (:class:`ddfast.methods.ast.SmoothExperts`: lr 0.003, momentum 0.9, weight decay 1e-3, clipping loss,
    gradient penalty). ``lr`` None takes the recipe's.

    Expert e draws everything from the seed (``seed``, "expert", e), so under ``torchrun`` rank r trains experts
    r, r + W, ... (:mod:`ddfast.distributed`), each into a shard file of its own, and rank 0 packs the shards
    into the buffer files: the same files for any world size (bit for bit with the same device, software and CPU
    thread count; otherwise up to the floating-point reduction order of the kernels). The job holds ``out`` while
    it runs (:func:`job_run_folder`; ``force`` takes it from another run)."""
    from . import distributed
    from .methods import DEFAULT_STRATEGY
    from .methods.ast import SmoothExperts, smooth_expert_hooks

    check_run_arguments(experts=experts, epochs=epochs, lr=lr, batch_size=batch_size, model=model, recipe=recipe,
                        seed=seed, device=device)
    ctx = distributed.context()
    with job_run_folder(out, ctx, force=force) as out:
        device = job_device(ctx, device)
        data = load_dataset(dataset, data_root, zca=zca, device=device)
        if data.train_images is None:
            raise ValueError(f"{data.name} is streamed from disk; expert training needs it in memory")
        augment = per_sample(DEFAULT_STRATEGY if dsa_strategy is None else dsa_strategy)
        if recipe == "ast":
            smooth = SmoothExperts() if lr is None else SmoothExperts(lr=lr)
            training = {"lr": smooth.lr, "momentum": smooth.momentum, "weight_decay": smooth.weight_decay}
        else:
            training = {"lr": 0.01 if lr is None else lr}
        first = int(Path(next_buffer_path(out)).stem.rsplit("_", 1)[1])
        ctx.barrier()  # every rank has read the folder before any file appears
        shards = out / f".shards_{first}"
        shards.mkdir(exist_ok=True)
        for expert in ctx.shard(experts):
            gen = torch.Generator().manual_seed(derive_seed(seed, "expert", expert))
            hooks = smooth_expert_hooks(epochs, smooth) if recipe == "ast" else None
            trajectory = train_experts(
                lambda: get_network(model, data.channels, data.num_classes, data.im_size),
                data.train_images, data.train_labels, 1, epochs, batch_size=batch_size, augment=augment,
                generator=gen, hooks=hooks, device=device, progress=progress and ctx.is_main, **training)
            save_buffer(shards / f"expert_{expert}.pt", trajectory)
        ctx.barrier()
        paths = [os.fspath(out / f"replay_buffer_{first + k}.pt") for k in range(-(-experts // EXPERTS_PER_FILE))]
        if ctx.is_main:
            for k, path in enumerate(paths):
                group = range(k * EXPERTS_PER_FILE, min((k + 1) * EXPERTS_PER_FILE, experts))
                save_buffer(path, [load_buffer(shards / f"expert_{e}.pt")[0] for e in group])
            for e in range(experts):
                (shards / f"expert_{e}.pt").unlink()
            shards.rmdir()
        ctx.barrier()
        return paths


def ensure_buffer(dataset: str, folder: str | os.PathLike, *, recipe: str = "mtt", experts: int = 5, epochs: int = 15,
                  seed: int = 0, force: bool = False, **kwargs) -> Path:
    """``folder`` holding expert trajectories of ``recipe``: kept when its ``buffer.json`` (written here) records the
    same dataset, recipe, experts, epochs and seed (unless ``force``), else trained afresh with :func:`buffer_run`
    (``kwargs``: its other arguments)."""
    folder = Path(folder)
    manifest = {"dataset": dataset, "recipe": recipe, "experts": experts, "epochs": epochs, "seed": seed,
                "seeding": "per expert"}  # buffers before the per-expert seeds are retrained
    recorded = folder / "buffer.json"
    if not force and folder.is_dir() and expert_files(folder):
        if recorded.exists() and json.loads(recorded.read_text()) == manifest:
            return folder
    print(f"training {experts} {recipe} experts for {epochs} epochs into {folder}", flush=True)
    for old in expert_files(folder) if folder.is_dir() else []:
        Path(old).unlink()
    buffer_run(dataset, folder, experts=experts, epochs=epochs, recipe=recipe, seed=seed, **kwargs)
    atomic_write_text(recorded, json.dumps(manifest, indent=2) + "\n")
    return folder


def diversity(teacher, syn: SyntheticSet, data, seed: int = 0) -> dict:
    """DELT's diversity (:func:`ddfast.eval.embedding_diversity`, teacher embeddings) of ``syn`` and of a random
    real subset of the same size drawn with ``seed``; None where a class has one image."""
    if syn.ipc is None or syn.ipc < 2:
        return {"distilled": None, "random_real": None}
    real = random_real_set(data, syn.ipc, torch.Generator().manual_seed(derive_seed(seed, "diversity")))
    return {"distilled": embedding_diversity(teacher, syn.images, syn.hard_labels),
            "random_real": embedding_diversity(teacher, real.images, real.labels)}


def teacher_run(dataset: str, out: str | os.PathLike, *, data_root=None, seed: int = 0, device: str | None = None,
                zca: bool = False, progress: bool = True, data=None, **recipe) -> dict:
    """SRe2L's squeeze: train a teacher on ``dataset`` (:func:`ddfast.methods.teacher_recipe`'s settings, then
    ``recipe``'s) and write it to ``out``; returns its record (model, recipe, seed, test accuracy)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    data = data if data is not None else load_dataset(dataset, data_root, zca=zca, device=device)
    settings = teacher_recipe(data.name, **recipe)
    net = squeeze(data, settings, seed=seed, device=device, progress=progress)
    accuracy = test_accuracy(net, data)
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    save_teacher(out, net, data, settings, seed=seed, accuracy=accuracy)
    return {"path": os.fspath(out), "model": settings.model, "accuracy": accuracy, "seed": seed}


def ensure_teacher(data, path: str | os.PathLike, *, seed: int = 0, device=None, progress: bool = True):
    """The teacher at ``path`` (loaded and checked against ``data``), trained there first by :func:`teacher_run`
    when the file does not exist; returns (teacher in eval mode, its record)."""
    if not os.path.exists(path):
        print(f"training a teacher for {data.name} into {os.fspath(path)}", flush=True)
        teacher_run(data.name, path, seed=seed, device=device, progress=progress, data=data)
    return load_teacher(path, data, device)
