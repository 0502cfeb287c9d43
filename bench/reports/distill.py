"""README section of the distillation results (records of scripts/results.py under op "distill"):
accuracy of each method's distilled set against a random real subset of the same size."""

from __future__ import annotations

from pathlib import Path

from ddfast.eval import verdict

from .format import pyplot, source

ORDER = {"dc": 0, "dsa": 1, "dm": 2, "mtt": 3, "lcs_gm": 4, "dream": 5, "ast": 6, "seqmatch": 7, "sre2l": 8, "delt": 9}


def _pct(entry: dict) -> str:
    return f"{100 * entry['mean']:.1f} ± {100 * entry['std']:.1f}"


def rows(latest) -> list[dict]:
    out = [r for rows in latest.values() for r in rows.values()]
    return sorted(out, key=lambda r: (r["device"], r["dataset"], r["ipc"], ORDER.get(r["case"], 9)))


def table(latest) -> list[str]:
    lines = ["| device | dataset | IPC | method | iterations | distill s | distilled acc % | random real acc % | "
             "eval | verdict |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows(latest):
        d = r["distilled"]
        lines.append(f"| {r['device']} | {r['dataset']} | {r['ipc']} | {r['case']} | {r['iterations']} | "
                     f"{r['seconds']:.0f} | {_pct(d)} | {_pct(r['random_real'])} | {d['preset']}, {d['runs']} runs, "
                     f"{d['epochs']} epochs{', KD' if r.get('protocol') == 'kd' else ''} | {verdict(r)} |")
    return lines


def seqmatch_vs_mtt(latest) -> list[str]:
    """SeqMatch against MTT at the same total IPC on the same dataset, where both were run (the MTT row of the
    same device when there is one, else of any): the trajectory-matching methods' comparison."""
    all_rows = rows(latest)
    lines = []
    for seq in (r for r in all_rows if r["case"] == "seqmatch"):
        mtts = [r for r in all_rows if r["case"] == "mtt" and (r["dataset"], r["ipc"]) == (seq["dataset"], seq["ipc"])]
        if not mtts:
            continue
        mtt = next((r for r in mtts if r["device"] == seq["device"]), mtts[0])
        devices = seq["device"] if mtt["device"] == seq["device"] else f"{mtt['device']} / {seq['device']}"
        subsets = seq.get("config", {}).get("num_subsets", "?")
        lines.append(f"| {devices} | {seq['dataset']} | {seq['ipc']} | {_pct(mtt['distilled'])} | "
                     f"{_pct(seq['distilled'])} ({subsets} subsets) | {mtt['iterations']} / {seq['iterations']} | "
                     f"{mtt['seconds']:.0f} / {seq['seconds']:.0f} |")
    if not lines:
        return []
    return ["", "**SeqMatch vs MTT at the same total IPC** (SeqMatch's iterations are summed over its subsets; "
            "each subset runs the MTT iteration count; distill seconds compare only on the same device and load):",
            "", "| device (MTT / SeqMatch) | dataset | IPC | MTT % | SeqMatch % | iterations (MTT / SeqMatch) | "
            "distill s (MTT / SeqMatch) |", "|---|---|---|---|---|---|---|", *lines]


# Published accuracies (%, ConvNet) to hold ddfast's rows against, with where they come from.
PAPER_SOURCE = {"dc": "DC: VICO-UoE/DatasetCondensation readme, Table 1 (main.py defaults, noise init)",
                "dsa": "DSA: the same readme, Table 2 (main.py --method DSA --init real)"}
PAPER_FIGURES = {("dc", "fashion_mnist", 1): 70.5, ("dc", "fashion_mnist", 10): 82.3, ("dc", "fashion_mnist", 50): 83.6,
                 ("dsa", "fashion_mnist", 1): 70.6, ("dsa", "fashion_mnist", 10): 84.6,
                 ("dsa", "fashion_mnist", 50): 88.7}
NO_PAPER_FIGURE = {"dm": "DM: none found (DM's paper and README report MNIST, CIFAR-10/100 and TinyImageNet; no later "
                         "paper's Fashion-MNIST table with DM could be verified)"}
PAPER_DATASETS = ("fashion_mnist",)


def _paper_cell(r: dict) -> tuple[str, str]:
    figure = PAPER_FIGURES.get((r["case"], r["dataset"], r["ipc"]))
    if figure is None:
        return "-", "-"
    return f"{figure:.1f}", f"{100 * r['distilled']['mean'] - figure:+.1f}"


def _length(r: dict) -> str:
    paper = r.get("paper_iterations")
    if paper is None or r["iterations"] >= paper:
        return f"{r['iterations']}"
    return f"{r['iterations']} of {paper} (curve below)"


def against_papers(latest, results: Path, plot: bool) -> list[str]:
    """Rows on the datasets with published tables (:data:`PAPER_DATASETS`): ddfast's accuracy beside the paper's,
    the gap, the length run against the paper's, and the accuracy-vs-iteration curves of runs shorter than the
    paper's; published figures not run yet are listed as such."""
    ran = [r for r in rows(latest) if r["dataset"] in PAPER_DATASETS]
    lines = []
    for r in ran:
        d, paper = r["distilled"], _paper_cell(r)
        lines.append(f"| {r['case']} | {r['dataset']} | {r['ipc']} | {_pct(d)} ({d['runs']} runs, {d['epochs']} "
                     f"epochs, {d['preset']}) | {paper[0]} | {paper[1]} | {_length(r)} | {r['seconds']:.0f} | "
                     f"{r['device']} | {_pct(r['random_real'])} | {verdict(r)} |")
    done = {(r["case"], r["dataset"], r["ipc"]) for r in ran}
    for (method, dataset, ipc), figure in sorted(PAPER_FIGURES.items(), key=lambda kv: (kv[0][1], kv[0][2],
                                                                                         ORDER[kv[0][0]])):
        if (method, dataset, ipc) not in done:
            lines.append(f"| {method} | {dataset} | {ipc} | not run yet | {figure:.1f} | | | | | | |")
    short = [r for r in ran if r.get("curve") and r["iterations"] < r.get("paper_iterations", 0)]
    picture = results / "paper_curves.png"
    if plot and short:
        plot_curves(short, picture)
    sources = "; ".join([*PAPER_SOURCE.values(), *NO_PAPER_FIGURE.values()])
    return ["", "**Held against the papers** (`make results-fashion-mnist`: Fashion-MNIST from Debian's "
            "dataset-fashion-mnist; hours per run on a CPU, resumed where a run stopped; datasets with published "
            "tables; ddfast's rows use the reference code's "
            "evaluation where the run says `paper`: DC 20 ConvNets x 300 epochs without augmentation, DSA and DM 20 x "
            "1000 epochs with DSA; gap = ddfast - paper, in points). Published figures: " + sources + ".", "",
            "| method | dataset | IPC | ddfast % | paper % | gap | iterations (of the paper's) | distill s | device | "
            "random real % | verdict |", "|---|---|---|---|---|---|---|---|---|---|---|", *lines,
            *(["", "![accuracy vs iteration, runs shorter than the paper's](bench/results/paper_curves.png)"]
              if short and picture.exists() else [])]


def plot_curves(runs: list[dict], path: Path) -> None:
    """Accuracy (one quick evaluation per point) against iteration, one line per run."""
    plt = pyplot()
    if plt is None:
        return
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r in runs:
        ax.plot([p["iteration"] for p in r["curve"]], [100 * p["accuracy"] for p in r["curve"]], marker="o",
                label=f"{r['case']} IPC {r['ipc']} ({r['iterations']} of {r['paper_iterations']} iterations)")
    ax.set_xlabel("iteration")
    ax.set_ylabel("test accuracy % (quick, 1 run)")
    ax.set_title("Runs shorter than the paper's: " + ", ".join(sorted({r["dataset"] for r in runs})))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _diversity(entry) -> str:
    return "-" if entry is None else f"{entry:.3f}"


def _against_random(r: dict) -> str:
    return "above" if r["distilled"]["mean"] > r["random_real"]["mean"] else "below"


def delt_vs_sre2l(latest, results: Path) -> list[str]:
    """DELT against SRe2L at the same IPC on the same device (DELT's claim against SRe2L): KD accuracy, the
    random real subset relabelled by the same teacher, diversity, synthesis time and image-iterations."""
    all_rows = rows(latest)
    lines = []
    for d in (r for r in all_rows if r["case"] == "delt"):
        s = next((r for r in all_rows if r["case"] == "sre2l" and (r["device"], r["dataset"], r["ipc"]) ==
                  (d["device"], d["dataset"], d["ipc"])), None)
        if s is None or not all(k in r for r in (s, d) for k in ("compute", "diversity")) \
                or not (s["seconds"] and s["compute"]["image_iterations"]):
            continue
        used, full = d["compute"]["image_iterations"], s["compute"]["image_iterations"]
        lines.append(f"| {d['device']} | {d['dataset']} | {d['ipc']} | {_pct(s['distilled'])} | {_pct(d['distilled'])} | "
                     f"{_pct(d['random_real'])} | {_diversity(s['diversity']['distilled'])} / "
                     f"{_diversity(d['diversity']['distilled'])} / {_diversity(d['diversity']['random_real'])} | "
                     f"{s['seconds']:.0f} / {d['seconds']:.0f} ({1 - d['seconds'] / s['seconds']:.0%} less) | "
                     f"{full:,} / {used:,} ({1 - used / full:.1%} less) | {_against_random(s)} / {_against_random(d)} |")
    if not lines:
        return []
    pictures = [(p.stem.rsplit("ipc", 1)[1], p.name) for p in sorted(results.glob("delt_vs_sre2l_ipc*.png"),
                                                                     key=lambda p: int(p.stem.rsplit("ipc", 1)[1]))]
    return ["", "**DELT vs SRe2L** (same teacher; KD protocol: a fresh ConvNet trained on the set against the teacher's "
            "soft labels of each random-resized-cropped batch, AdamW, T = 20; the random real subset relabelled the "
            "same way; diversity: mean pairwise cosine distance of the teacher's embeddings within a class; "
            "synthesis seconds of the recover loop as the run measured them, next to other jobs (quiet timings of the same "
            "settings: \"DELT vs SRe2L synthesis\" under Measured), and its image-iterations):", "",
            "| device | dataset | IPC | SRe2L % | DELT % | random real % (KD) | diversity SRe2L / DELT / random real | "
            "synthesis s SRe2L / DELT | image-iterations SRe2L / DELT | vs random real (SRe2L / DELT) |",
            "|---|---|---|---|---|---|---|---|---|---|", *lines,
            *(f"\n![DELT vs SRe2L, IPC {ipc}](bench/results/{name})" for ipc, name in pictures)]


def plot_accuracy(latest, path: Path) -> None:
    plt = pyplot()
    if plt is None:
        return
    data = rows(latest)
    labels = [f"{r['case']}\nIPC {r['ipc']}" for r in data]
    x = range(len(data))
    fig, ax = plt.subplots(figsize=(max(5, 1.2 * len(data)), 3.5))
    ax.bar([i - 0.2 for i in x], [100 * r["distilled"]["mean"] for r in data], 0.4,
           yerr=[100 * r["distilled"]["std"] for r in data], label="distilled")
    ax.bar([i + 0.2 for i in x], [100 * r["random_real"]["mean"] for r in data], 0.4,
           yerr=[100 * r["random_real"]["std"] for r in data], label="random real subset")
    ax.set_xticks(list(x), labels)
    ax.set_ylabel("test accuracy %")
    ax.set_ylim(0, 100)
    ax.legend(loc="lower right")
    ax.set_title("ddfast distillation on " + ", ".join(sorted({r["dataset"] for r in data})))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(latest, results: Path, plot: bool) -> str:
    if plot:
        plot_accuracy(latest, results / "distill_accuracy.png")
    sources = "; ".join(source(list(rows.values())) for _, rows in sorted(latest.items()))
    return "\n".join([
        f"_Generated by `bench/report.py` from `bench/results/*.jsonl` ({sources}); produced by `make results`._", "",
        "**Distilled set vs a random real subset of the same size**, both evaluated with the same protocol "
        "(DC protocol: fresh ConvNet trained with per-image DSA, SGD momentum 0.9; the learned lr for the MTT family; "
        "SeqMatch's sets by its sequential protocol, subset after subset; SRe2L and DELT by the KD protocol with their "
        "teacher, the random real subset relabelled by the same teacher), "
        "mean ± std over the runs. Verdict: at IPC 1 the gap must exceed the larger standard deviation, "
        "at IPC 10 the mean must be higher.", "",
        *table(latest), *seqmatch_vs_mtt(latest), *delt_vs_sre2l(latest, results), "", "![accuracy](bench/results/distill_accuracy.png)",
        *against_papers(latest, results, plot)])
