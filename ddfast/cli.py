"""The ddfast command line: distil a dataset with a DD method and evaluate the set against a random real subset
(distill), evaluate a saved set (eval), train MTT's expert trajectories (buffer) or SRe2L's teacher (teacher),
run the README's first example on digits (quickstart), report what loaded (info) or benchmark an op (bench)."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from dataclasses import fields, replace
from pathlib import Path

from .backends import BackendUnavailableError
from .errors import UsageError

BENCH_DIR = Path(__file__).resolve().parent.parent / "bench"
QUICKSTART = (("dm", 1), ("dm", 10), ("dc", 1))  # (method, ipc) runs of `ddfast quickstart`
# Errors a user can cause and fix (a bad flag, a missing or broken file, a held folder, a missing package): printed
# as one message without a traceback unless --debug. UsageError (a ValueError) exits with 2, the others with 1.
EXPECTED_ERRORS = (ValueError, FileNotFoundError, FileExistsError, PermissionError, ImportError,
                   BackendUnavailableError)
TOP_EPILOG = """run 'ddfast COMMAND --help' for a command's options and examples.
--debug (before or after COMMAND) prints the traceback of an error instead of its message alone."""
DISTILL_EPILOG = """examples:
  ddfast distill --method dm --dataset digits --ipc 10 --out runs/dm10
  ddfast distill --method dm --ipc 10 --show-config     # every --set KEY with its value for digits, IPC 10
  ddfast distill --method dc --ipc 1 --set lr_img=0.5 --eval-preset full --out runs/dc1
  ddfast buffer --out runs/buffer && ddfast distill --method mtt --ipc 10 --buffer runs/buffer --out runs/mtt10"""


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
    """Distilled vs random-real accuracy and the verdict (:func:`ddfast.eval.verdict`), one line per run (markdown)."""
    from .eval import verdict

    print("| method | dataset | IPC | iterations | distill s | distilled acc % | random real acc % | eval | verdict |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        d, b = r["distilled"], r["random_real"]
        print(f"| {r['method']} | {r['dataset']} | {r['ipc']} | {r['iterations']} | {r['seconds']:.0f} | {_percent(d)} "
              f"| {_percent(b)} | {d['preset']}, {d['runs']} runs{', KD' if r.get('protocol') == 'kd' else ''} "
              f"| {verdict(r)} |")


def _show_config(args) -> int:
    """Every setting of the method's config for the dataset and ipc given, its value and meaning."""
    from .data import canonical_name
    from .methods import METHODS, make_config, setting_meanings

    dataset = canonical_name(args.dataset)
    config = make_config(args.method, dataset, ipc=args.ipc, **_settings(args.set))
    spec = METHODS[args.method]
    paper = replace(spec.config(), **spec.fixed)
    meanings = setting_meanings(type(config))
    rows = []
    for f in fields(config):
        value, default = getattr(config, f.name), getattr(paper, f.name)
        note = meanings[f.name]
        if value != default:
            note = f"{note} [paper default {default!r}]".strip()
        rows.append((f.name, repr(value), note))
    print(f"{args.method} on {dataset}, IPC {config.ipc}: its settings (change one with --set KEY=VALUE)")
    name_width, value_width = (max(len(row[i]) for row in rows) for i in (0, 1))
    for name, value, note in rows:
        print(f"  {name:<{name_width}}  {value:<{value_width}}  {note}".rstrip())
    return 0


def _distill(args) -> int:
    from .runner import distill_run

    if args.show_config:
        return _show_config(args)
    missing = [flag for flag, value in (("--ipc", args.ipc), ("--out", args.out)) if value is None]
    if missing:
        args.parser.error(f"the following arguments are required: {', '.join(missing)}")
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


def _export(args) -> int:
    from .synthetic import SyntheticSet, to_dc, to_mtt

    syn = SyntheticSet.load(args.path)
    paths = [to_dc(syn, args.out, method=args.method, dataset=args.dataset_name, model=args.model)] \
        if args.to == "dc" else to_mtt(syn, args.out)
    print("\n".join(map(str, paths)))
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
    from .distributed import context
    from .runner import distill_run

    talk = context().is_main
    rows = []
    for number, (method, ipc) in enumerate(QUICKSTART, 1):
        out = Path(args.out) / f"{method}_ipc{ipc}"
        label = f"{method.upper()} IPC {ipc} ({number}/{len(QUICKSTART)})"
        if talk:  # quiet: one line per run, finished by its seconds; else the progress bars come between
            print(f"{label} -> {out} ...", end=" " if args.quiet else "\n", flush=True)
        start = time.perf_counter()
        rows.append(distill_run(method, "digits", ipc, out, seed=args.seed, device=args.device, eval_preset="quick",
                                progress=not args.quiet))
        if talk:
            print(f"{'' if args.quiet else label + ': '}{time.perf_counter() - start:.0f} s", flush=True)
    if None in rows:  # a rank other than 0 under torchrun: rank 0 reports
        return 0
    print("\nDistillation on sklearn's digits (16x16), evaluated with the QUICK preset (2 runs, 60 epochs); "
          "`ddfast distill --eval-preset full` runs the full protocol.")
    print_table(rows)
    print(f"run folders (set.pt, set.png, loss.png, results.json) in {args.out}/")
    return 0


def _common(p: argparse.ArgumentParser, dataset: bool = True) -> None:
    if dataset:
        p.add_argument("--dataset", default="digits", help="digits (embedded), cifar10, cifar100, mnist, "
                       "fashion_mnist, imagefolder")
        p.add_argument("--data-root", default=None, help="folder holding the dataset's files (never downloaded)")
    p.add_argument("--seed", type=int, default=0, help="seed every random draw derives from")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    _debug_flag(p, default=argparse.SUPPRESS)


def _debug_flag(p: argparse.ArgumentParser, default) -> None:
    """``--debug`` on the top-level parser and (``default`` SUPPRESS, so either place counts) on each command."""
    p.add_argument("--debug", action="store_true", default=default,
                   help="print the traceback of an error, not only its message")


def _compile_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--compile", default="auto", choices=["auto", "on", "off"],
                   help="torch.compile the networks (auto: where the shipped per-device rule says it is faster and "
                        "the run is long enough to pay for the compilation; compile time is reported apart)")


def _force_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--force", action="store_true", help="take the --out folder even if another run's lock is on it "
                   "(only when that run is gone: two runs writing one folder mix their files)")


def build_parser() -> argparse.ArgumentParser:
    """The ``ddfast`` parser: one subparser per command, each with its function as ``func``."""
    from .methods import METHODS

    parser = argparse.ArgumentParser(prog="ddfast", description=__doc__, epilog=TOP_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _debug_flag(parser, default=False)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    info = sub.add_parser("info", help="versions, devices, backends and why any did not load")
    _debug_flag(info, default=argparse.SUPPRESS)
    info.set_defaults(func=_info)

    d = sub.add_parser("distill", help="distil a dataset with a DD method, then evaluate it",
                       description="Distil a dataset into IPC synthetic images per class with a DD method, then "
                                   "evaluate the set and a random real subset of the same size with the same "
                                   "protocol. The run folder gets set.pt, set.png, loss.png, checkpoint.pt and "
                                   "results.json.",
                       epilog=DISTILL_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    d.add_argument("--method", required=True, choices=sorted(METHODS), help="the DD method")
    d.add_argument("--ipc", type=int, default=None, help="synthetic images per class (required)")
    d.add_argument("--iterations", type=int, default=None, help="outer iterations (default: the method's)")
    d.add_argument("--out", default=None, help="run folder, locked while the run lasts (required)")
    d.add_argument("--show-config", action="store_true", help="print every setting of the method's config (the "
                   "--set keys) with its value for --dataset and --ipc, then exit")
    _force_flag(d)
    d.add_argument("--buffer", default=None, help="folder of replay_buffer_<n>.pt expert files (mtt, ast, seqmatch)")
    d.add_argument("--teacher", default=None, help="teacher file for sre2l/delt (made by `ddfast teacher`; trained "
                   "there when missing; default RUN/teacher.pt)")
    d.add_argument("--backend", default="auto", help="ddfast backend for every op: auto, reference, cpp, cuda, triton")
    d.add_argument("--eval-preset", default="quick", choices=["quick", "full", "paper"],
                   help="evaluation of the set and the random real subset: quick (2 runs, 60 epochs), full (5 runs, "
                        "300 epochs; 1000 for the MTT family; DSA augmentation) or paper (the method's reference "
                        "code: DC 20 runs x 300 epochs without augmentation, DSA/DM 20 x 1000 with DSA, MTT family "
                        "5 x 1000)")
    d.add_argument("--eval-model", default="ConvNet", help="network trained on the set to evaluate it")
    d.add_argument("--eval-runs", type=int, default=None, help="override the preset's number of runs")
    d.add_argument("--eval-epochs", type=int, default=None, help="override the preset's training epochs")
    d.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoint.pt")
    d.add_argument("--checkpoint-every", type=int, default=50, help="write checkpoint.pt every K iterations "
                   "(and at the end)")
    d.add_argument("--eval-every", type=int, default=0, help="evaluate the set every K iterations (1 quick run; "
                   "accuracy.png)")
    d.add_argument("--zca", action="store_true", help="ZCA-whiten the data (MTT's --zca)")
    d.add_argument("--set", action="append", metavar="KEY=VALUE", help="any other setting of the method's config, "
                   "e.g. lr_img=0.5 (repeatable); --show-config lists the keys and their defaults")
    _compile_flag(d)
    d.add_argument("--autocast", default="off", choices=["off", "bf16"],
                   help="run the distillation's networks in bf16 autocast (faster on AMX CPUs and tensor-core GPUs; "
                        "changes results beyond rounding, so off by default; evaluation stays fp32)")
    _common(d)
    d.set_defaults(func=_distill, parser=d)

    e = sub.add_parser("eval", help="evaluate a saved synthetic set")
    e.add_argument("path", help="set.pt (ddfast), res_*.pt (DC) or MTT's folder / images_best.pt")
    e.add_argument("--source", default="ddfast", choices=["ddfast", "dc", "mtt"],
                   help="who wrote the set: ddfast (set.pt), dc (DC's res_*.pt) or mtt (MTT's images_best.pt)")
    e.add_argument("--models", default="ConvNet", help="comma-separated networks (e.g. MLP,ConvNet,LeNet,AlexNet,"
                   "VGG11,ResNet18)")
    e.add_argument("--preset", default="full", choices=["quick", "full", "paper"],
                   help="full: 5 runs, 300 epochs (1000 for the MTT family), DSA augmentation; quick: 2 runs, 60 "
                        "epochs; paper: the protocol of the reference code of the method that made the set (DC 20 "
                        "runs x 300 epochs without augmentation, DSA/DM 20 x 1000, MTT family 5 x 1000)")
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

    x = sub.add_parser("export", help="write a ddfast set (set.pt) in DC's or MTT's file layout, for their code")
    x.add_argument("path", help="set.pt written by ddfast distill")
    x.add_argument("--to", required=True, choices=["dc", "mtt"], help="dc: res_<method>_<dataset>_<model>_<ipc>ipc.pt "
                   "(DC's main.py layout); mtt: images_best.pt, labels_best.pt and syn_lr_best.pt (MTT's run folder)")
    x.add_argument("--out", required=True, help="folder to write into")
    x.add_argument("--method", default=None, help="dc: the method in the file name (default: the set's, upper-cased)")
    x.add_argument("--dataset-name", default=None, help="dc: the dataset in the file name (default: DC's name of the "
                   "set's dataset, e.g. FashionMNIST)")
    x.add_argument("--model", default="ConvNet", help="dc: the model in the file name")
    x.set_defaults(func=_export)

    b = sub.add_parser("buffer", help="train expert trajectories (MTT's replay_buffer_<n>.pt; under torchrun the "
                       "experts are shared out over the ranks)")
    b.add_argument("--out", required=True, help="buffer folder for the replay_buffer_<n>.pt files (locked while "
                   "the job lasts; more experts are added to those already there)")
    _force_flag(b)
    b.add_argument("--experts", type=int, default=10, help="expert trajectories to train")
    b.add_argument("--epochs", type=int, default=50, help="training epochs of each expert (one saved point each)")
    b.add_argument("--recipe", default="mtt", choices=["mtt", "ast"], help="mtt: MTT buffer.py's experts; ast: AST's "
                   "smooth experts (clipping loss, gradient penalty, momentum 0.9, weight decay 1e-3)")
    b.add_argument("--lr", type=float, default=None, help="expert lr (default: the recipe's, 0.01 / 0.003)")
    b.add_argument("--batch-size", type=int, default=256, help="the experts' training batch")
    b.add_argument("--model", default="ConvNet", help="network the experts train")
    b.add_argument("--dsa-strategy", default=None, help="DSA families ('none': no augmentation)")
    b.add_argument("--zca", action="store_true", help="ZCA-whiten the data (MTT's --zca; distill with --zca too)")
    _common(b)
    b.set_defaults(func=_buffer)

    t = sub.add_parser("teacher", help="train a teacher for sre2l/delt (SRe2L's squeeze)")
    t.add_argument("--out", required=True, help="teacher file to write")
    t.add_argument("--model", default=None, help="BatchNorm network (default: ResNet18; ConvNetBN on digits)")
    t.add_argument("--epochs", type=int, default=None, help="default: 200 (50 on digits)")
    t.add_argument("--lr", type=float, default=None, help="SGD lr (default 0.1, cosine)")
    t.add_argument("--batch-size", type=int, default=None, help="default 128")
    t.add_argument("--zca", action="store_true", help="ZCA-whiten the data")
    _common(t)
    t.set_defaults(func=_teacher)

    q = sub.add_parser("quickstart", help="DM (IPC 1, 10) and DC (IPC 1) on digits, quick evaluation, one table")
    q.add_argument("--out", default="runs/quickstart", help="folder of the three run folders")
    _common(q, dataset=False)
    q.set_defaults(func=_quickstart)

    bench = sub.add_parser("bench", help="run a benchmark of bench/ (source checkout)")
    _debug_flag(bench, default=argparse.SUPPRESS)
    bench.add_argument("op", help="which benchmark (bench/bench_<op>.py)")
    bench.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark script")
    bench.set_defaults(func=_bench)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Run a command; the errors of :data:`EXPECTED_ERRORS` print as one message (a traceback with ``--debug``)."""
    args = build_parser().parse_args(argv)
    from .distributed import destroy

    try:
        code = args.func(args)
    except EXPECTED_ERRORS as error:
        if args.debug:
            raise
        print(f"ddfast {args.command}: error: {error}", file=sys.stderr)
        code = 2 if isinstance(error, UsageError) else 1
    finally:
        destroy()
    sys.exit(code)
