"""Distil and evaluate the README's results grid, record it, and regenerate the README tables.

For each method and IPC: `ddfast.runner.distill_run` into runs/results/<dataset>/<method>_ipc<k>/ (a run
whose results.json exists with the same preset is reused unless --force; a killed run resumes from its
checkpoint), with the chosen evaluation preset (full: 5 runs of
the DC protocol, 300 epochs, 1000 for the MTT family) and the random-real baseline of the same size. The expert
buffers are trained first: MTT's (runs/results/<dataset>/buffer, for mtt and SeqMatch's first subset) and AST's
smooth experts (buffer_ast). Each result is appended as one JSON line
(op "distill") to bench/results/<device>.jsonl, and bench/report.py renders the README section. SRe2L and DELT
share one teacher (runs/results/<dataset>/teacher.pt, trained if missing) and are evaluated by the KD protocol
with it, as is their random-real baseline; their rows also record compute (image-iterations) and diversity.

Long runs (Fashion-MNIST: hours per run on a CPU) write a checkpoint every --checkpoint-every iterations and, run
again with the same arguments, continue from it; --eval-every K adds the accuracy-vs-iteration curve (one quick
evaluation every K iterations, kept across resumes) to the run folder and the record. --iterations sets a budget
shorter (or longer) than the paper's, per method or per method and IPC; the record keeps the method's paper length
beside it, and the README table says which rows ran short.

Usage: python scripts/results.py [--dataset digits] [--methods dc,dm,mtt,lcs_gm,dream,ast,seqmatch] [--ipcs 1,10]
       (SRe2L/DELT: --methods sre2l,delt --ipcs 10,50)
       [--preset full|quick|paper] [--eval-runs N]
       [--iterations dm=2000,dc:10=50] [--eval-every K] [--checkpoint-every K] [--compile auto|on|off]
       [--experts 5] [--expert-epochs 15] [--force] [--device cpu] [--results bench/results] [--no-report]
       (make results)
   e.g. Fashion-MNIST (make results-fashion-mnist): --dataset fashion_mnist --methods dc,dsa --ipcs 1 --preset paper
        --eval-every 100 --checkpoint-every 20 --compile on
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Recorder  # noqa: E402
from ddfast.methods import METHODS  # noqa: E402
from ddfast.runner import distill_run, ensure_buffer  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--methods", default="dc,dm,mtt,lcs_gm,dream,ast,seqmatch")
    parser.add_argument("--ipcs", default="1,10")
    parser.add_argument("--preset", default="full", choices=["quick", "full", "paper"])
    parser.add_argument("--eval-runs", type=int, default=None, help="override the preset's number of runs")
    parser.add_argument("--iterations", default="", help="budgets: method=N or method:ipc=N, comma-separated "
                        "(default: the method's own length for the dataset)")
    parser.add_argument("--eval-every", type=int, default=0, help="accuracy curve: one quick evaluation every K")
    parser.add_argument("--checkpoint-every", type=int, default=50)
    parser.add_argument("--compile", default="auto", choices=["auto", "on", "off"])
    parser.add_argument("--experts", type=int, default=5)
    parser.add_argument("--expert-epochs", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "results")
    parser.add_argument("--force", action="store_true", help="rerun runs that already have results.json")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results",
                        help="where the records go (one JSON lines file per device)")
    parser.add_argument("--no-report", action="store_true", help="record only; leave the README tables as they are")
    args = parser.parse_args(argv)
    folder = args.out / args.dataset
    methods = args.methods.split(",")
    budgets = parse_budgets(args.iterations)
    buffers = {}  # method -> its expert folder: MTT's experts (mtt, seqmatch's S1) or AST's smooth experts
    for recipe, folder_name, users in (("mtt", "buffer", ("mtt", "seqmatch")), ("ast", "buffer_ast", ("ast",))):
        if any(m in methods for m in users):
            buffer = ensure_buffer(args.dataset, folder / folder_name, recipe=recipe, experts=args.experts,
                                   epochs=args.expert_epochs, force=args.force, data_root=args.data_root,
                                   seed=args.seed, device=args.device)
            buffers.update({m: buffer for m in users})
    rec = Recorder(torch.device(args.device), out_dir=args.results, quick=args.preset != "full")
    for method in methods:
        for ipc in (int(k) for k in args.ipcs.split(",")):
            run = folder / f"{method}_ipc{ipc}"
            done = run / "results.json"
            results = json.loads(done.read_text()) if done.exists() and not args.force else None
            if results is not None and results["distilled"]["preset"] == args.preset:
                print(f"reusing {done}")
            else:  # a killed run continues from its checkpoint
                results = distill_run(method, args.dataset, ipc, run, data_root=args.data_root, seed=args.seed,
                                      device=args.device, eval_preset=args.preset, eval_runs=args.eval_runs,
                                      iterations=budgets.get((method, ipc), budgets.get((method, None))),
                                      resume=not args.force,
                                      checkpoint_every=args.checkpoint_every, eval_every=args.eval_every,
                                      compile=args.compile, buffer=buffers.get(method),
                                      teacher=folder / "teacher.pt" if METHODS[method].needs_teacher else None)
            d, b = results["distilled"], results["random_real"]
            rec.record(op="distill", case=method, backend="ddfast", strategy=d["preset"],
                       size=f"{results['dataset']}-ipc{ipc}", dataset=results["dataset"], ipc=ipc,
                       iterations=results["iterations"], seconds=results["seconds"], distilled=d, random_real=b,
                       seed=results["seed"], config=results["config"], protocol=results.get("protocol", "dc"),
                       paper_iterations=METHODS[method].config().iterations,
                       curve=results.get("curve", []),
                       # the run's own ddfast, environment and backends (a reused results.json may predate this commit)
                       **{k: results[k] for k in ("compute", "diversity", "teacher", "ddfast", "environment",
                                                  "backends_ran") if k in results})
            print(f"{method} ipc {ipc}: distilled {100 * d['mean']:.1f} ± {100 * d['std']:.1f} %, random real "
                  f"{100 * b['mean']:.1f} ± {100 * b['std']:.1f} % ({d['preset']}, {d['runs']} runs)")
    for ipc in (int(k) for k in args.ipcs.split(",")):
        if {"sre2l", "delt"} <= set(methods):
            compare_sets(folder, ipc, ROOT / "bench" / "results" / f"delt_vs_sre2l_ipc{ipc}.png")
    if not args.no_report:
        subprocess.run([sys.executable, str(ROOT / "bench" / "report.py"), "--results", str(args.results)], check=True)


def parse_budgets(text: str) -> dict:
    """``"dm=2000,dc:10=50"`` -> {("dm", None): 2000, ("dc", 10): 50}."""
    budgets = {}
    for item in filter(None, text.split(",")):
        key, _, value = item.partition("=")
        method, _, ipc = key.partition(":")
        if not value.isdigit() or (ipc and not ipc.isdigit()):
            raise SystemExit(f"--iterations: expected method=N or method:ipc=N, got {item!r}")
        budgets[(method, int(ipc) if ipc else None)] = int(value)
    return budgets


def compare_sets(folder: Path, ipc: int, path: Path) -> None:
    """SRe2L's and DELT's sets of one IPC side by side (one row per class), titled with their KD accuracy and
    diversity, from the run folders' set.pt and results.json."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    from ddfast.synthetic import SyntheticSet, image_grid

    fig, axes = plt.subplots(1, 2, figsize=(12 if ipc > 10 else 7, 4.2))
    for ax, method in zip(axes, ("sre2l", "delt")):
        run = folder / f"{method}_ipc{ipc}"
        syn = SyntheticSet.load(run / "set.pt")
        results = json.loads((run / "results.json").read_text())
        d = results["distilled"]
        ax.imshow(image_grid(syn.pixels(), syn.hard_labels, syn.num_classes, min_cell=16).numpy())
        ax.set_title(f"{'SRe2L' if method == 'sre2l' else 'DELT'}: KD {100 * d['mean']:.1f} ± {100 * d['std']:.1f} %, "
                     f"diversity {results['diversity']['distilled']:.3f}", fontsize=9)
        ax.axis("off")
    fig.suptitle(f"{results['dataset']}, IPC {ipc}: one row per class", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
