"""Ablation experiments of the gradient-matching seed methods on digits (issue: gradient-matching methods,
item 5), recorded as accuracy-vs-iteration curves and rendered into the README by bench/report.py.

  dream    DREAM+ (k-means representative real batches) vs its random-sampling variant (``plain=True``),
           everything else equal. Reported: the iterations DREAM+ needs to reach the random variant's
           final accuracy (DREAM's claim: far fewer).
  lcs_gm   label-cycle-shifting GM (``shift="cycle"``) vs plain GM (``shift="none"``), everything else
           equal. Reported: final accuracy and the iterations to converge (the first evaluation within
           1 point of the variant's final accuracy), plus the round the early-exit rule would stop at.

Every ``--eval-every`` iterations the current set is evaluated with ``--eval-runs`` runs of the DC
protocol's quick preset (60 epochs; same seeds at every point, so the curve's steps are the set's, not the
evaluation's noise). Each variant and IPC is one JSON line (op "experiment") in bench/results/<device>.jsonl.

The defaults (digits' iteration counts, IPC 1 only, for the time a 2-core CPU takes) are what
`make experiments` runs and the README reports.

Usage: python scripts/experiments.py [--experiments dream,lcs_gm] [--ipcs K,...] [--dream-ipcs 1] [--lcs-ipcs 1]
       [--eval-runs 3] [--dream-iterations 10] [--eval-every-dream 2] [--lcs-iterations 100]
       [--eval-every-lcs 10] [--results DIR]
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

# experiment -> (method, {variant: settings}); the first variant is the method, the second its ablation
EXPERIMENTS = {
    "dream": ("dream", {"dream+": {"plain": False}, "random sampling": {"plain": True}}),
    "lcs_gm": ("lcs_gm", {"label-cycle GM": {"shift": "cycle"}, "plain GM": {"shift": "none"}}),
}


def curve(method: str, data, ipc: int, iterations: int, eval_every: int, eval_runs: int, seed: int, device,
          settings: dict) -> dict:
    """Distil with ``settings`` and evaluate the set every ``eval_every`` iterations (and at 0 and the end)."""
    config = make_config(method, data.name, ipc=ipc, iterations=iterations, seed=seed, **settings)
    points: list[tuple[int, float, float]] = []

    def measure(it: int, images: torch.Tensor, labels: torch.Tensor) -> None:
        result = evaluate((images.detach().cpu(), labels.cpu()), data, preset="quick", runs=eval_runs,
                          augment=default_augment("dc", data), seed=seed, device=device, progress=False)
        points.append((it, result.mean, result.std))
        print(f"  {method} {settings} ipc {ipc} it {it:4d}: {100 * result.mean:.1f} ± {100 * result.std:.1f} %",
              flush=True)

    captured = {}

    def observe(it, state):
        captured["state"] = state
        if it % eval_every == 0 or it == iterations:
            measure(it, *state.output())

    initial = make_config(method, data.name, ipc=ipc, iterations=0, seed=seed, **settings)
    start = METHODS[method].distill(data, initial, device=device, progress=False)
    measure(0, start.images, start.labels)
    syn = METHODS[method].distill(data, config, device=device, progress=False, callback=observe)
    state = captured["state"]
    if points[-1][0] != state.iteration:  # stopped early: the returned set is the final point
        measure(state.iteration, syn.images, syn.labels)
    return {"iterations": [p[0] for p in points], "accuracy": [p[1] for p in points], "std": [p[2] for p in points],
            "seconds": syn.metadata["seconds"], "rounds": syn.metadata["iterations"],
            "series": {"loss": list(state.history), **{k: list(v) for k, v in state.series.items()}}}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--experiments", default="dream,lcs_gm")
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
        iterations, every, ipcs = ((args.dream_iterations, args.eval_every_dream, args.dream_ipcs) if name == "dream"
                                   else (args.lcs_iterations, args.eval_every_lcs, args.lcs_ipcs))
        for ipc in (int(k) for k in (args.ipcs or ipcs).split(",")):
            for variant, settings in variants.items():
                print(f"{name}: {variant}, ipc {ipc}, {iterations} iterations", flush=True)
                result = curve(method, data, ipc, iterations, every, args.eval_runs, args.seed, device, settings)
                rec.record(op="experiment", case=name, backend=variant, strategy="curve",
                           size=f"{data.name}-ipc{ipc}", dataset=data.name, ipc=ipc, method=method,
                           settings=settings, eval_runs=args.eval_runs, eval_preset="quick", seed=args.seed,
                           **result)
    if args.results == ROOT / "bench" / "results":
        subprocess.run([sys.executable, str(ROOT / "bench" / "report.py")], check=True)


if __name__ == "__main__":
    main()
