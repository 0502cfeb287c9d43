"""The README report of the method ablations (bench/reports/experiment.py): the figures it derives from
the recorded curves; the provenance every bench row carries."""

from __future__ import annotations

import json
from pathlib import Path

import torch

import ddfast
from bench.common import Recorder
from bench.reports import distill, experiment


def _row(case, variant, accuracy, ipc=1, gm=(), shift=()):
    return {"case": case, "backend": variant, "strategy": "curve", "size": f"digits-ipc{ipc}", "ipc": ipc,
            "dataset": "digits", "device": "cpu", "torch": "t", "commit": "c", "eval_runs": 3,
            "iterations": [0, 2, 4, 6][:len(accuracy)], "accuracy": accuracy, "std": [0.01] * len(accuracy),
            "seconds": 10.0, "series": {"gm": list(gm), "shift": list(shift)}}


def test_first_reaching_and_early_exit_round():
    row = _row("dream", "dream+", [0.5, 0.8, 0.9, 0.85])
    assert experiment.first_reaching(row, 0.85) == 4
    assert experiment.first_reaching(row, 0.95) is None
    assert experiment.early_exit_round([4, 4, 3, 3, 3, 3], 2, 1e-3) == 6
    assert experiment.early_exit_round([4, 3, 2, 1], 2, 1e-3) is None


def test_render_reports_iterations_to_reach_the_ablation(tmp_path: Path):
    rows = [_row("dream", "dream+", [0.5, 0.8, 0.9, 0.9]), _row("dream", "random sampling", [0.5, 0.7, 0.8, 0.85]),
            _row("lcs_gm", "label-cycle GM", [0.5, 0.9, 0.92, 0.92], gm=[3.0] * 25, shift=[1 + i % 9 for i in range(25)]),
            _row("lcs_gm", "plain GM", [0.5, 0.6, 0.8, 0.9])]
    latest = {"cpu": {(r["case"], r["backend"], r["strategy"], r["size"]): r for r in rows}}
    text = experiment.render(latest, tmp_path, plot=False)
    assert "| cpu | 1 | 6 | 90.0 ± 1.0 | 85.0 ± 1.0 | 4 of 6 |" in text  # DREAM+ passes 85 % at iteration 4
    # converged: first at or above 92 % - 1 point (iteration 4); a flat gm series stops after 2 windows of one
    # shift cycle (9 rounds: the shifts run 1..9)
    assert "| cpu | 1 | label-cycle GM | 92.0 ± 1.0 | 92.0 | 4 of 6 | 18 |" in text
    assert "| cpu | 1 | plain GM | 90.0 ± 1.0 | 90.0 | 6 of 6 | never |" in text


def test_bench_rows_record_ddfast_versions_and_device(tmp_path: Path):
    row = Recorder(torch.device("cpu"), out_dir=tmp_path).record(op="demo", case="one")
    assert row["ddfast_version"] == ddfast.__version__ and row["torch"] == torch.__version__
    assert {"commit", "triton", "python", "device", "date"} <= set(row) and row["device"].endswith("threads)")
    written = [json.loads(line) for line in next(tmp_path.glob("*.jsonl")).read_text().splitlines()]
    assert written == [row]


def _distill_row(case, ipc, mean, iterations, paper_iterations, curve=()):
    accuracy = {"mean": mean, "std": 0.01, "runs": 20, "epochs": 300, "preset": "paper"}
    return {"case": case, "dataset": "fashion_mnist", "ipc": ipc, "device": "cpu", "iterations": iterations,
            "paper_iterations": paper_iterations, "seconds": 100.0, "distilled": accuracy,
            "random_real": {**accuracy, "mean": 0.5}, "curve": [{"iteration": i, "accuracy": a} for i, a in curve]}


def test_rows_are_held_against_the_papers_figures_and_short_runs_say_so(tmp_path: Path):
    latest = {"cpu": {("dc", 1): _distill_row("dc", 1, 0.70, 1000, 1000),
                      ("dm", 1): _distill_row("dm", 1, 0.66, 2000, 20000, [(0, 0.5), (1000, 0.6), (2000, 0.66)])}}
    lines = distill.against_papers(latest, tmp_path, plot=True)
    dc = next(line for line in lines if line.startswith("| dc | fashion_mnist | 1 |"))
    assert "| 70.5 | -0.5 | 1000 |" in dc and "(20 runs, 300 epochs, paper)" in dc
    dm = next(line for line in lines if line.startswith("| dm | fashion_mnist | 1 |"))
    assert "| - | - | 2000 of 20000 (curve below) |" in dm
    assert any(line.startswith("| dsa | fashion_mnist | 1 | not run yet | 70.6 |") for line in lines)
    assert (tmp_path / "paper_curves.png").stat().st_size > 0 and lines[-1].endswith("paper_curves.png)")


def test_results_script_records_a_method_that_takes_no_teacher(tmp_path):
    """scripts/results.py end to end on digits for DM (no teacher, no expert buffer): the row it records carries
    the run's budget and the method's paper length, and a second call reuses the finished run."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parent.parent
    command = [sys.executable, str(root / "scripts" / "results.py"), "--methods", "dm", "--ipcs", "1",
               "--iterations", "dm=2", "--preset", "quick", "--eval-runs", "1", "--device", "cpu",
               "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "records"), "--no-report"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-2000:]
    rows = [json.loads(line) for path in (tmp_path / "records").glob("*.jsonl") for line in path.open()]
    assert [(r["op"], r["case"], r["ipc"], r["iterations"]) for r in rows] == [("distill", "dm", 1, 2)]
    assert rows[0]["paper_iterations"] > 2 and 0.0 < rows[0]["distilled"]["mean"] <= 1.0
    second = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert second.returncode == 0 and "reusing" in second.stdout, second.stderr[-2000:]
