"""README section of the method ablations (records of scripts/experiments.py under op "experiment"):
accuracy-vs-iteration curves of DREAM+ vs random sampling, of label-cycle GM vs plain GM and of AST's
component ablation, with the
figures each experiment claims about (iterations to reach an accuracy, iterations to converge)."""

from __future__ import annotations

from pathlib import Path

from ddfast.methods.lcs_gm import plateaued

from .format import pyplot, source

CONVERGED = 0.01  # "converged": the first evaluation at least the variant's final accuracy minus 1 point
EARLY_EXIT_TOL = 1e-3  # lcs_gm's early-exit rule applied to the recorded gm series, window = one shift cycle


def first_reaching(row: dict, target: float) -> int | None:
    """The first evaluated iteration whose accuracy is at least ``target`` (None if none is)."""
    return next((it for it, a in zip(row["iterations"], row["accuracy"]) if a >= target), None)


def early_exit_round(series: list[float], window: int, tol: float) -> int | None:
    """The round lcs_gm's early exit (window W, tolerance tol) would stop at on ``series`` (None: it runs on)."""
    return next((n for n in range(2 * window, len(series) + 1) if plateaued(series[:n], window, tol)), None)


def _groups(latest):
    """(case, size) -> [method row, ablation row] in recorded variant order."""
    out: dict[tuple, list[dict]] = {}
    for _, rows in sorted(latest.items()):
        for r in sorted(rows.values(), key=lambda r: (r["case"], r["ipc"])):
            out.setdefault((r["case"], r["ipc"], r["device"]), []).append(r)
    return out


def _pct(row: dict) -> str:
    return f"{100 * row['accuracy'][-1]:.1f} ± {100 * row['std'][-1]:.1f}"


def _it(value) -> str:
    return "not reached" if value is None else str(value)


def dream_table(groups) -> list[str]:
    lines = ["| device | IPC | iterations | DREAM+ final % | random sampling final % | DREAM+ iterations to reach "
             "random sampling's final | distill s (DREAM+ / random) |", "|---|---|---|---|---|---|---|"]
    for (case, ipc, device), rows in groups.items():
        if case != "dream" or len(rows) < 2:
            continue
        ours, plain = _by_variant(rows, "dream+")
        lines.append(f"| {device} | {ipc} | {ours['iterations'][-1]} | {_pct(ours)} | {_pct(plain)} | "
                     f"{_it(first_reaching(ours, plain['accuracy'][-1]))} of {ours['iterations'][-1]} | "
                     f"{ours['seconds']:.0f} / {plain['seconds']:.0f} |")
    return lines


def shift_cycle(rows) -> int:
    """The window of the early-exit figure: one full cycle of the recorded label shifts (K - 1 rounds), the same
    for both variants, so that every window holds each shift once (at least 1)."""
    return max([1, *(int(max(r["series"].get("shift") or [0])) for r in rows)])


def lcs_table(groups) -> list[str]:
    lines = ["| device | IPC | variant | final % | best % | iterations to converge | early exit would stop at |",
             "|---|---|---|---|---|---|---|"]
    for (case, ipc, device), rows in groups.items():
        if case != "lcs_gm":
            continue
        window = shift_cycle(rows)
        for r in rows:
            converged = first_reaching(r, r["accuracy"][-1] - CONVERGED)
            stop = early_exit_round(r["series"].get("gm", []), window, EARLY_EXIT_TOL)
            lines.append(f"| {device} | {ipc} | {r['backend']} | {_pct(r)} | {100 * max(r['accuracy']):.1f} | "
                         f"{_it(converged)} of {r['iterations'][-1]} | {_it(stop) if stop else 'never'} |")
    return lines


def ast_table(groups) -> list[str]:
    """AST's ablation: each variant's final accuracy and its difference from AST with every component."""
    lines = ["| device | IPC | variant | final % | vs AST (points) | best % | distill s |",
             "|---|---|---|---|---|---|---|"]
    for (case, ipc, device), rows in groups.items():
        if case != "ast":
            continue
        full = next((r for r in rows if r["backend"] == "AST"), None)
        for r in rows:
            delta = "" if full is None or r is full else f"{100 * (r['accuracy'][-1] - full['accuracy'][-1]):+.1f}"
            lines.append(f"| {device} | {ipc} | {r['backend']} | {_pct(r)} | {delta} | "
                         f"{100 * max(r['accuracy']):.1f} | {r['seconds']:.0f} |")
    return lines


def _by_variant(rows, first: str):
    ours = next(r for r in rows if r["backend"] == first)
    return ours, next(r for r in rows if r is not ours)


def _plot(groups, path: Path) -> bool:
    plt = pyplot()
    if plt is None or not groups:
        return False
    keys = sorted(groups)
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for r in groups[key]:
            mean = [100 * a for a in r["accuracy"]]
            std = [100 * s for s in r["std"]]
            ax.errorbar(r["iterations"], mean, yerr=std, label=r["backend"], capsize=2, marker="o", ms=3)
        ax.set_title(f"{key[0]}, {groups[key][0]['dataset']}, IPC {key[1]}", fontsize=9)
        ax.set_xlabel("outer iteration")
        ax.set_ylabel("test accuracy % (quick preset)")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def render(latest, results: Path, plot: bool) -> str:
    groups = _groups(latest)
    figure = results / "experiments.png"
    has_figure = _plot(groups, figure) if plot else figure.exists()
    sources = "; ".join(source(list(rows.values())) for _, rows in sorted(latest.items()))
    runs = sorted({r["eval_runs"] for rows in groups.values() for r in rows})
    return "\n".join([
        f"_Generated by `bench/report.py` from `bench/results/*.jsonl` ({sources}); produced by "
        f"`python scripts/experiments.py`._", "",
        f"Accuracy of the set during distillation, evaluated every few iterations with the quick preset "
        f"({', '.join(map(str, runs))} runs, 60 epochs, 200 for AST, the same seeds at every point); the variants of an "
        f"experiment share every other setting (digits defaults).", "",
        "**DREAM+ vs random sampling** (DREAM's claim: representative batches reach the random variant's final "
        "accuracy in far fewer iterations, > 15x; with evaluations every few outer iterations the table can show at "
        "most the ratio of the run's length to the first evaluation point).", "",
        *dream_table(groups), "",
        "**Label-cycle-shifting GM vs plain GM** (shift s cycling over 1..K-1 vs s = 0). Converged: the first "
        f"evaluation at or above the variant's final accuracy minus {100 * CONVERGED:.0f} point. Early exit: the "
        f"round the method's stopping rule (relative tolerance {EARLY_EXIT_TOL:g} on the gradient-matching loss, "
        "window one shift cycle, K - 1 rounds) would stop at.", "",
        *lcs_table(groups), "",
        "**AST, one component off at a time** (smooth experts: MTT's expert buffer instead; representative init: "
        "random real images; student momentum: 0, with lr_teacher x 10 so the effective step stays; balanced loss; "
        "intermediate matching; weight perturbation), and all of them off (MTT on MTT's experts). Evaluations "
        "use the set's learned lr and the quick preset's 200 epochs of the MTT family.", "",
        *ast_table(groups),
        *(["", "![ablation curves](bench/results/experiments.png)"] if has_figure else [])])
