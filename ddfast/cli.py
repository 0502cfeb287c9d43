"""The ``ddfast`` command line: ``distill`` (a DD method on a dataset, evaluated against a random real
subset), ``eval`` (a saved set, ddfast's or DC's/MTT's), ``buffer`` (MTT expert trajectories),
``teacher`` (SRe2L's squeeze, for sre2l/delt), ``quickstart`` (the README's first command: DM and DC on digits with the quick evaluation preset),
``info`` (what loaded and why not) and ``bench`` (the benchmarks of a source checkout)."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"
QUICKSTART = (("dm", 1), ("dm", 10), ("dc", 1))  # (method, ipc) runs of `ddfast quickstart`


def _info(_args) -> int:
    from .info import main

    main()
    return 0


def _bench(args) -> int:
    script = BENCH_DIR / f"bench_{args.op}.py"
    if not script.exists():
        print(f"ddfast bench: {script} not found; benchmarks run from a source checkout of ddfast", file=sys.stderr)
        return 2
    return subprocess.call([sys.executable, str(script), *args.rest])


def _settings(pairs: list[str]) -> dict:
    """``--set key=value`` pairs as strings; ddfast.usage.check_settings parses each as its config field's type."""
    from .errors import UsageError

    settings = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError("--set", f"--set expects KEY=VALUE, got {pair!r}")
        settings[key] = value
    return settings


def _percent(entry: dict) -> str:
    return f"{100 * entry['mean']:.1f} ± {100 * entry['std']:.1f}"


def print_table(rows: list[dict]) -> None:
    """Distilled vs random-real accuracy, one line per run (markdown)."""
    print("| method | dataset | IPC | iterations | distill s | distilled acc % | random real acc % | eval |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        d, b = r["distilled"], r["random_real"]
        print(f"| {r['method']} | {r['dataset']} | {r['ipc']} | {r['iterations']} | {r['seconds']:.0f} | {_percent(d)} "
              f"| {_percent(b)} | {d['preset']}, {d['runs']} runs{', KD' if r.get('protocol') == 'kd' else ''} |")


def _distill(args) -> int:
    from .runner import distill_run

    results = distill_run(args.method, args.dataset, args.ipc, args.out, data_root=args.data_root,
                          iterations=args.iterations, seed=args.seed, device=args.device, backend=args.backend,
                          eval_preset=args.eval_preset, eval_model=args.eval_model, eval_runs=args.eval_runs,
                          eval_epochs=args.eval_epochs, buffer=args.buffer, teacher=args.teacher,
                          resume=args.resume, checkpoint_every=args.checkpoint_every, eval_every=args.eval_every,
                          settings=_settings(args.set), zca=args.zca, progress=not args.quiet, compile=args.compile,
                          autocast=args.autocast, force=args.force)
    if results is None:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    print_table([results])
    print(f"written to {args.out}: set.pt, set.png, loss.png, results.json")
    return 0


def _not_rank_0() -> bool:
    """True on ranks other than 0 under torchrun: eval and teacher run on rank 0 alone."""
    from .distributed import context

    return not context().is_main


def _eval(args) -> int:
    from .runner import eval_run

    if _not_rank_0():
        return 0
    results = eval_run(args.path, args.dataset, data_root=args.data_root, models=args.models.split(","),
                       preset=args.preset, seed=args.seed, device=args.device, source=args.source, lr=args.lr,
                       baseline=not args.no_baseline, runs=args.runs, epochs=args.epochs,
                       zca=True if args.zca else None, teacher=args.teacher, temperature=args.temperature,
                       progress=not args.quiet, compile=args.compile)
    print("| model | distilled acc % | random real acc % |")
    print("|---|---|---|")
    for model, entry in results["models"].items():
        base = _percent(entry["random_real"]) if "random_real" in entry else "-"
        print(f"| {model} | {_percent(entry['distilled'])} | {base} |")
    return 0


def _buffer(args) -> int:
    from .runner import buffer_run

    paths = buffer_run(args.dataset, args.out, data_root=args.data_root, experts=args.experts, epochs=args.epochs,
                       lr=args.lr, batch_size=args.batch_size, model=args.model, dsa_strategy=args.dsa_strategy,
                       recipe=args.recipe, seed=args.seed, device=args.device, zca=args.zca, progress=not args.quiet,
                       force=args.force)
    from .distributed import context

    if context().is_main:
        print("\n".join(paths))
    return 0


def _teacher(args) -> int:
    from .runner import teacher_run

    if _not_rank_0():
        return 0
    record = teacher_run(args.dataset, args.out, data_root=args.data_root, seed=args.seed, device=args.device,
                         zca=args.zca, progress=not args.quiet, model=args.model, epochs=args.epochs, lr=args.lr,
                         batch_size=args.batch_size)
    print(f"teacher {record['model']} written to {record['path']}: test accuracy {100 * record['accuracy']:.2f}%")
    return 0


def _quickstart(args) -> int:
    from .runner import distill_run

    rows = []
    for method, ipc in QUICKSTART:
        rows.append(distill_run(method, "digits", ipc, Path(args.out) / f"{method}_ipc{ipc}", seed=args.seed,
                                device=args.device, eval_preset="quick", progress=not args.quiet))
    if None in rows:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    print("\nDistillation on sklearn's digits (16x16), evaluated with the QUICK preset (2 runs, 60 epochs); "
          "`ddfast distill --eval-preset full` runs the full protocol.")
    print_table(rows)
    return 0


def _common(p: argparse.ArgumentParser, dataset: bool = True) -> None:
    if dataset:
        p.add_argument("--dataset", default="digits", help="digits (embedded), cifar10, cifar100, mnist, "
                       "fashion_mnist, imagefolder")
        p.add_argument("--data-root", default=None, help="folder holding the dataset's files (never downloaded)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _compile_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="torch.compile the networks (auto: where the shipped per-device rule says it is faster and "
                        "the run is long enough to pay for the compilation; compile time is reported apart)")


def _force_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="take the --out folder even if another run's lock is on it "
                   "(only when that run is gone: two runs writing one folder mix their files)")


def main(argv: list[str] | None = None) -> None:
    from .methods import METHODS

    parser = argparse.ArgumentParser(prog="ddfast", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("info", help="versions, devices, backends and why any did not load").set_defaults(func=_info)

    d = sub.add_parser("distill", help="distil a dataset with a DD method, then evaluate it")
    d.add_argument("--method", required=True, choices=sorted(METHODS))
    d.add_argument("--ipc", type=int, required=True, help="synthetic images per class")
    d.add_argument("--iterations", type=int, default=None, help="outer iterations (default: the method's)")
    d.add_argument("--out", required=True, help="run folder (locked while the run lasts)")
    _force_flag(d)
    d.add_argument("--buffer", default=None, help="folder of replay_buffer_<n>.pt expert files (mtt, ast, seqmatch)")
    d.add_argument("--teacher", default=None, help="teacher file for sre2l/delt (made by `ddfast teacher`; trained "
                   "there when missing; default RUN/teacher.pt)")
    d.add_argument("--backend", default="auto", help="ddfast backend for every op: auto, reference, cpp, cuda, triton")
    d.add_argument("--eval-preset", default="quick", choices=["quick", "full"])
    d.add_argument("--eval-model", default="ConvNet")
    d.add_argument("--eval-runs", type=int, default=None, help="override the preset's number of runs")
    d.add_argument("--eval-epochs", type=int, default=None, help="override the preset's training epochs")
    d.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint.pt")
    d.add_argument("--checkpoint-every", type=int, default=50)
    d.add_argument("--eval-every", type=int, default=0, help="evaluate the set every K iterations (1 quick run; "
                   "accuracy.png)")
    d.add_argument("--zca", action="store_true", help="ZCA-whiten the data (MTT's --zca)")
    d.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other setting of the method's config")
    _compile_flag(d)
    d.add_argument("--autocast", default="off", choices=["off", "bf16"],
                   help="run the distillation's networks in bf16 autocast (faster on AMX CPUs and tensor-core GPUs; "
                        "changes results beyond rounding, so off by default; evaluation stays fp32)")
    _common(d)
    d.set_defaults(func=_distill)

    e = sub.add_parser("eval", help="evaluate a saved synthetic set")
    e.add_argument("path", help="set.pt (ddfast), res_*.pt (DC) or MTT's folder / images_best.pt")
    e.add_argument("--source", default="ddfast", choices=["ddfast", "dc", "mtt"])
    e.add_argument("--models", default="ConvNet", help="comma-separated networks (e.g. MLP,ConvNet,LeNet,AlexNet,"
                   "VGG11,ResNet18)")
    e.add_argument("--preset", default="full", choices=["quick", "full"])
    e.add_argument("--lr", type=float, default=None, help="MTT's learned lr when its files do not hold it")
    e.add_argument("--no-baseline", action="store_true", help="skip the random-real baseline")
    e.add_argument("--runs", type=int, default=None, help="override the preset's number of runs")
    e.add_argument("--epochs", type=int, default=None, help="override the preset's training epochs")
    e.add_argument("--zca", action="store_true", help="ZCA-whiten the test data (default: as the set records)")
    e.add_argument("--teacher", default=None, help="teacher file: evaluate by the KD protocol with its soft labels "
                   "(needed for sre2l/delt sets)")
    e.add_argument("--temperature", type=float, default=20.0, help="KD temperature (with --teacher)")
    _compile_flag(e)
    _common(e)
    e.set_defaults(func=_eval)

    b = sub.add_parser("buffer", help="train expert trajectories (MTT's replay_buffer_<n>.pt; under torchrun the "
                       "experts are shared out over the ranks)")
    b.add_argument("--out", required=True, help="buffer folder (locked while the job lasts)")
    _force_flag(b)
    b.add_argument("--experts", type=int, default=10)
    b.add_argument("--epochs", type=int, default=50)
    b.add_argument("--recipe", default="mtt", choices=["mtt", "ast"], help="mtt: MTT buffer.py's experts; ast: AST's "
                   "smooth experts (clipping loss, gradient penalty, momentum 0.9, weight decay 1e-3)")
    b.add_argument("--lr", type=float, default=None, help="expert lr (default: the recipe's, 0.01 / 0.003)")
    b.add_argument("--batch-size", type=int, default=256)
    b.add_argument("--model", default="ConvNet")
    b.add_argument("--dsa-strategy", default=None, help="DSA families ('none': no augmentation)")
    b.add_argument("--zca", action="store_true")
    _common(b)
    b.set_defaults(func=_buffer)

    t = sub.add_parser("teacher", help="train a teacher for sre2l/delt (SRe2L's squeeze)")
    t.add_argument("--out", required=True, help="teacher file to write")
    t.add_argument("--model", default=None, help="BatchNorm network (default: ResNet18; ConvNetBN on digits)")
    t.add_argument("--epochs", type=int, default=None, help="default: 200 (50 on digits)")
    t.add_argument("--lr", type=float, default=None, help="SGD lr (default 0.1, cosine)")
    t.add_argument("--batch-size", type=int, default=None, help="default 128")
    t.add_argument("--zca", action="store_true")
    _common(t)
    t.set_defaults(func=_teacher)

    q = sub.add_parser("quickstart", help="DM (IPC 1, 10) and DC (IPC 1) on digits, quick evaluation, one table")
    q.add_argument("--out", default="runs/quickstart")
    _common(q, dataset=False)
    q.set_defaults(func=_quickstart)

    bench = sub.add_parser("bench", help="run a benchmark of bench/ (source checkout)")
    bench.add_argument("op", help="which benchmark (bench/bench_<op>.py)")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark script")
    bench.set_defaults(func=_bench)
    args = parser.parse_args(argv)
    from .distributed import destroy

    try:
        code = args.func(args)
    finally:
        destroy()
    sys.exit(code)
