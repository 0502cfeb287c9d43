"""README section of grad_distance: the op alone, one gradient-matching step, ResNet-18-sized
gradients, and the width-sweep plot (records of bench/bench_grad_distance.py)."""

from __future__ import annotations

from pathlib import Path

from .format import ROOT, ms as _ms, pyplot, source as _source, speedup as _x


def op_table(latest) -> list[str]:
    lines = ["| device | backend | forward ms | DC loop forward ms | speedup | fwd+bwd ms | DC loop fwd+bwd ms | "
             "speedup | ops dispatched, fwd / fwd+bwd (ddfast vs DC) | CUDA kernels, fwd+bwd (ddfast vs DC) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for slug, rows in sorted(latest.items()):
        for (case, backend, _, _), r in sorted(rows.items(), key=lambda kv: str(kv[0])):
            if case != "op_convnet3_x10":
                continue
            kernels = f"{r['cuda_kernels']} vs {r['baseline_cuda_kernels']}" if r.get("cuda_kernels") else ""
            ops = (f"{r['forward_launches']} / {r['launches']} vs "
                   f"{r['baseline_forward_launches']} / {r['baseline_launches']}")
            lines.append(f"| {r['device']} | {backend} | {_ms(r['forward_ms'])} | {_ms(r['baseline_forward_ms'])} | "
                         f"{_x(r['forward_speedup'])} | {_ms(r['median_ms'])} | {_ms(r['baseline_ms'])} | "
                         f"{_x(r['speedup'])} | {ops} | {kernels} |")
    return lines


def step_table(latest) -> list[str]:
    lines = ["| device | grad_distance backend | per-class gradients | real images per class | step ms | "
             "DC loop step ms | speedup | peak memory (ddfast / DC) |", "|---|---|---|---|---|---|---|---|"]
    for slug, rows in sorted(latest.items()):
        for (case, backend, strategy, _), r in sorted(rows.items(), key=lambda kv: str(kv[0])):
            if case != "gm_step_convnet3":
                continue
            mem = ""
            if r.get("peak_mem_bytes"):
                mem = f"{r['peak_mem_bytes'] / 2**30:.2f} / {r['baseline_peak_mem_bytes'] / 2**30:.2f} GiB"
            lines.append(f"| {r['device']} | {backend} | {strategy} | {r['real_per_class']} | {_ms(r['median_ms'])} | "
                         f"{_ms(r['baseline_ms'])} | {_x(r['speedup'])} | {mem} |")
    return lines


def resnet_table(latest) -> list[str]:
    lines = ["| device | backend | classes | forward ms | forward kernels ms | kernel GB/s | % of copy bandwidth | "
             "fwd+bwd ms | DC loop fwd+bwd ms |", "|---|---|---|---|---|---|---|---|---|"]
    for slug, rows in sorted(latest.items()):
        for (case, backend, _, _), r in sorted(rows.items(), key=lambda kv: str(kv[0])):
            if not case.startswith("resnet18"):
                continue
            gbps = r.get("forward_kernel_gbps")
            pct = f"{gbps / r['copy_gbps']:.0%}" if gbps and r.get("copy_gbps") else ""
            lines.append(f"| {r['device']} | {backend} | {r['classes']} | {_ms(r['forward_ms'])} | "
                         f"{_ms(r.get('forward_kernel_ms'))} | {f'{gbps:.0f}' if gbps else ''} | {pct} | "
                         f"{_ms(r['median_ms'])} | {_ms(r.get('baseline_ms'))} |")
    return lines


def plot_sweep(latest, out: Path) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    devices = [slug for slug, rows in latest.items() if any(k[0].startswith("sweep_width") for k in rows)]
    if not devices:
        return None
    fig, axes = plt.subplots(1, len(devices), figsize=(6 * len(devices), 4.2), squeeze=False)
    for ax, slug in zip(axes[0], sorted(devices)):
        rows = [r for k, r in latest[slug].items() if k[0].startswith("sweep_width")]
        for backend in sorted({r["backend"] for r in rows}):
            pts = sorted((r["params"] * r["classes"], r["median_ms"]) for r in rows if r["backend"] == backend)
            line, = ax.loglog(*zip(*pts), marker="o", label=f"ddfast {backend}")
            kernel = sorted((r["params"] * r["classes"], r["kernel_ms"]) for r in rows
                            if r["backend"] == backend and r.get("kernel_ms"))
            if kernel and backend != "reference":
                ax.loglog(*zip(*kernel), marker=".", linestyle=":", color=line.get_color(),
                          label=f"ddfast {backend}, kernel time only")
        base = sorted({(r["params"] * r["classes"], r["baseline_ms"]) for r in rows if r.get("baseline_ms")})
        ax.loglog(*zip(*base), marker="s", linestyle="--", color="k", label="DC loop")
        ax.set_title(f"grad_distance fwd+bwd, ConvNet-3 width sweep x 10 classes\n{rows[0]['device']}", fontsize=9)
        ax.set_xlabel("gradient elements (all classes)")
        ax.set_ylabel("ms (median)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def render(latest, results: Path, plot: bool) -> str:
    plot = plot_sweep(latest, results / "grad_distance_sweep.png") if plot else None
    if plot is None and (results / "grad_distance_sweep.png").exists():
        plot = results / "grad_distance_sweep.png"
    sources = "; ".join(_source(list(rows.values())) for _, rows in sorted(latest.items()))
    parts = [f"_Generated by `bench/report.py` from `bench/results/*.jsonl` ({sources})._", "",
             "**The op alone**: ConvNet-3 gradients (320,010 parameters, 14 tensors) x 10 classes, metric 'ours', "
             "fp32; DC loop = `bench/baselines/dc_match.py` (per class, per tensor `distance_wb`).", "",
             *op_table(latest), "",
             "**One gradient-matching outer step** (ConvNet-3, 10 classes, IPC 10, real batch per class as listed): "
             "per-class gradients of real and synthetic batches, distance, backward into the images.", "",
             *step_table(latest), "",
             "**ResNet-18-sized gradients** (11,173,962 parameters, 62 tensors): forward bandwidth of the kernels "
             "(profiler time) against the device's measured copy bandwidth.", "",
             *resnet_table(latest)]
    if plot:
        parts += ["", f"![size sweep]({plot.relative_to(ROOT).as_posix()})"]
    return "\n".join(parts)
