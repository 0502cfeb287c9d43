"""Ablation experiments of the seed methods on digits (gradient-matching and trajectory
matching methods), recorded as accuracy-vs-iteration curves and rendered into the README by bench/report.py.

  dream    DREAM+ (k-means representative real batches) vs its random-sampling variant (``plain=True``),
           everything else equal. Reported: the iterations DREAM+ needs to reach the random variant's
           final accuracy (DREAM's claim: far fewer).
  lcs_gm   label-cycle-shifting GM (``shift="cycle"``) vs plain GM (``shift="none"``), everything else
           equal. Reported: final accuracy and the iterations to converge (the first evaluation within
           1 point of the variant's final accuracy), plus the round the early-exit rule would stop at.
  ast      AST with every component, then with one component off at a time (smooth experts: MTT's buffer
           instead; representative init: random real; student momentum: 0 with lr_teacher x 10, so the
           effective step stays; balanced loss; intermediate matching; weight perturbation), and with all
           of them off (MTT on MTT's buffer with AST's lr_lr). Buffers: runs/results/<dataset>/buffer(_ast),
           trained if missing (5 experts x 15 epochs, as scripts/results.py).

Every ``--eval-every`` iterations the current set is evaluated with ``--eval-runs`` runs of the DC
protocol's quick preset (60 epochs, 200 and the learned lr for AST; same seeds at every point, so the curve's steps are the set's, not the
evaluation's noise). Each variant and IPC is one JSON line (op "experiment") in bench/results/<device>.jsonl.

The defaults (digits' iteration counts, IPC 1 only, for the time a 2-core CPU takes) are what
`make experiments` runs and the README reports.

Usage: python scripts/experiments.py [--experiments dream,lcs_gm,ast] [--ipcs K,...] [--dream-ipcs 1]
       [--lcs-ipcs 1] [--ast-ipcs 1] [--eval-runs 3] [--dream-iterations 10] [--eval-every-dream 2]
       [--lcs-iterations 100] [--eval-every-lcs 10] [--ast-iterations 200] [--eval-every-ast 50] [--results DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.common import Recorder  # noqa: E402
from ddfast.data import load_dataset  # noqa: E402
from ddfast.eval import default_augment, evaluate  # noqa: E402
from ddfast.methods import METHODS, make_config  # noqa: E402
from ddfast.runner import ensure_buffer  # noqa: E402
from ddfast.synthetic import SyntheticSet  # noqa: E402

# experiment -> (method, {variant: settings}); the first variant is the method, the others its ablations. A
# "buffer" setting names the expert recipe of a trajectory method's variant (default: the method's own).
_AST_OFF = {"init": "real", "student_momentum": 0.0, "balanced": False, "intermediate": False, "perturb": 0.0}
EXPERIMENTS = {
    "dream": ("dream", {"dream+": {"plain": False}, "random sampling": {"plain": True}}),
    "lcs_gm": ("lcs_gm", {"label-cycle GM": {"shift": "cycle"}, "plain GM": {"shift": "none"}}),
    "ast": ("ast", {"AST": {}, "no smooth experts": {"buffer": "mtt"}, "no representative init": {"init": "real"},
                    "no student momentum": {"student_momentum": 0.0, "lr_teacher": 0.01},
                    "no balanced loss": {"balanced": False}, "no intermediate matching": {"intermediate": False},
                    "no weight perturbation": {"perturb": 0.0},
                    "none (MTT)": {**_AST_OFF, "buffer": "mtt", "lr_teacher": 0.01}}),
}
BUFFERS = {"mtt": "buffer", "ast": "buffer_ast"}  # expert recipe -> folder under runs/results/<dataset>


def curve(method: str, data, ipc: int, iterations: int, eval_every: int, eval_runs: int, seed: int, device,
          settings: dict, extra: tuple = ()) -> dict:
    """Distil with ``settings`` (``extra``: the method's further arguments, an expert buffer) and evaluate the set
    every ``eval_every`` iterations (and at 0 and the end)."""
    config = make_config(method, data.name, ipc=ipc, iterations=iterations, seed=seed, **settings)
    points: list[tuple[int, float, float]] = []

    def measure(it: int, images: torch.Tensor, labels: torch.Tensor, lr=None) -> None:
        current = SyntheticSet(images.detach().cpu(), labels.cpu(), lr=None if lr is None else lr.detach().cpu(),
                               metadata={"method": method})  # the MTT family: its learned lr and longer schedule
        result = evaluate(current, data, preset="quick", runs=eval_runs, augment=default_augment("dc", data),
                          seed=seed, device=device, progress=False)
        points.append((it, result.mean, result.std))
        print(f"  {method} {settings} ipc {ipc} it {it:4d}: {100 * result.mean:.1f} ± {100 * result.std:.1f} %",
              flush=True)

    captured = {}

    def observe(it, state):
        captured["state"] = state
        if it % eval_every == 0 or it == iterations:
            measure(it, *state.output(), state.tensors.get("lr"))

    initial = make_config(method, data.name, ipc=ipc, iterations=0, seed=seed, **settings)
    start = METHODS[method].distill(data, initial, *extra, device=device, progress=False)
    measure(0, start.images, start.labels, start.lr)
    syn = METHODS[method].distill(data, config, *extra, device=device, progress=False, callback=observe)
    state = captured["state"]
    if points[-1][0] != state.iteration:  # stopped early: the returned set is the final point
        measure(state.iteration, syn.images, syn.labels, syn.lr)
    return {"iterations": [p[0] for p in points], "accuracy": [p[1] for p in points], "std": [p[2] for p in points],
            "seconds": syn.metadata["seconds"], "rounds": syn.metadata["iterations"],
            "series": {"loss": list(state.history), **{k: list(v) for k, v in state.series.items()}}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", default="dream,lcs_gm,ast")
    parser.add_argument("--ipcs", default=None, help="IPCs of every experiment (overrides the next two)")
    parser.add_argument("--dream-ipcs", default="1")
    parser.add_argument("--lcs-ipcs", default="1")
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--data-root", default=None)
    parser.add_argument("--eval-runs", type=int, default=3)
    parser.add_argument("--dream-iterations", type=int, default=10)
    parser.add_argument("--eval-every-dream", type=int, default=2)
    parser.add_argument("--lcs-iterations", type=int, default=100)
    parser.add_argument("--eval-every-lcs", type=int, default=10)
    parser.add_argument("--ast-ipcs", default="1")
    parser.add_argument("--ast-iterations", type=int, default=200)
    parser.add_argument("--eval-every-ast", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results",
                        help="folder of the JSON-lines results (the README is re-rendered only for the default)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    data = load_dataset(args.dataset, args.data_root, device=device)
    rec = Recorder(device, out_dir=args.results)
    for name in args.experiments.split(","):
        if name not in EXPERIMENTS:
            raise SystemExit(f"unknown experiment {name!r}; choose from {sorted(EXPERIMENTS)}")
        method, variants = EXPERIMENTS[name]
        iterations, every, ipcs = {"dream": (args.dream_iterations, args.eval_every_dream, args.dream_ipcs),
                                   "lcs_gm": (args.lcs_iterations, args.eval_every_lcs, args.lcs_ipcs),
                                   "ast": (args.ast_iterations, args.eval_every_ast, args.ast_ipcs)}[name]
        for ipc in (int(k) for k in (args.ipcs or ipcs).split(",")):
            for variant, settings in variants.items():
                print(f"{name}: {variant}, ipc {ipc}, {iterations} iterations", flush=True)
                settings = dict(settings)
                extra = ()
                if METHODS[method].needs_buffer:
                    recipe = settings.pop("buffer", method)
                    extra = (ensure_buffer(data.name, ROOT / "runs" / "results" / data.name / BUFFERS[recipe],
                                           recipe=recipe, data_root=args.data_root, seed=args.seed,
                                           device=args.device),)
                result = curve(method, data, ipc, iterations, every, args.eval_runs, args.seed, device, settings,
                               extra)
                rec.record(op="experiment", case=name, backend=variant, strategy="curve",
                           size=f"{data.name}-ipc{ipc}", dataset=data.name, ipc=ipc, method=method,
                           settings=variants[variant], eval_runs=args.eval_runs, eval_preset="quick", seed=args.seed,
                           **result)
    if args.results == ROOT / "bench" / "results":
        subprocess.run([sys.executable, str(ROOT / "bench" / "report.py")], check=True)


if __name__ == "__main__":
    main()
