"""Render benchmark results (bench/results/*.jsonl) as the README's tables and as plots.

Each op with records gets its own README section between ``<!-- bench:<op>:begin -->`` and
``<!-- bench:<op>:end -->``, rendered by ``bench/reports/<op>.py`` (``render(latest, results, plot)``).
For every device, the newest record of each (case, backend, strategy, size) is used; full runs win
over ``--quick`` runs. Never type a number into the README by hand.

Usage: python bench/report.py [--results DIR] [--readme README.md] [--no-plot] [--check]
  --check: render without writing and fail if README.md's sections differ (CI).
"""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REPORTS = sorted(p.stem for p in (ROOT / "bench" / "reports").glob("*.py") if p.stem not in ("__init__", "format"))
KEY_FIELDS = ("case", "backend", "strategy", "size")


def markers(op: str) -> tuple[str, str]:
    return f"<!-- bench:{op}:begin -->", f"<!-- bench:{op}:end -->"


def load(results: Path) -> dict[str, dict[str, dict[tuple, dict]]]:
    """op -> device slug -> (case, backend, strategy, size) -> newest record."""
    latest: dict[str, dict[str, dict[tuple, dict]]] = {}
    for path in sorted(results.glob("*.jsonl")):
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            row = json.loads(line)
            key = tuple(row.get(f) for f in KEY_FIELDS)
            per_device = latest.setdefault(row["op"], {}).setdefault(row["device_slug"], {})
            rank = (not row.get("quick", False), row["date"])
            old = per_device.get(key)
            if old is None or rank >= (not old.get("quick", False), old["date"]):
                per_device[key] = row
    return latest


def sections(results: Path, plot: bool) -> dict[str, str]:
    latest = load(results)
    out = {}
    for op in REPORTS:
        if op in latest:
            out[op] = importlib.import_module(f"bench.reports.{op}").render(latest[op], results, plot)
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--readme", type=Path, default=ROOT / "README.md")
    parser.add_argument("--no-plot", action="store_true")
    parser.add_argument("--check", action="store_true", help="fail if README.md's tables are out of date")
    args = parser.parse_args(argv)
    rendered = sections(args.results, plot=not (args.no_plot or args.check))
    if not rendered:
        raise SystemExit(f"no benchmark results in {args.results}")
    readme = args.readme.read_text()
    stale = []
    for op, text in rendered.items():
        begin, end = markers(op)
        if begin not in readme or end not in readme:
            stale.append(f"{op} (README.md has no {begin} ... {end} section)")
        elif f"{begin}\n{text}\n{end}" not in readme:
            stale.append(op)
            readme = re.sub(re.escape(begin) + r".*?" + re.escape(end), lambda _: f"{begin}\n{text}\n{end}", readme,
                            flags=re.S)
    if args.check:
        if stale:
            raise SystemExit(f"README.md's benchmark sections differ from bench/results: {', '.join(stale)}; "
                             "run `python bench/report.py`")
        print(f"README.md's benchmark sections match bench/results ({', '.join(rendered)})")
        return
    args.readme.write_text(readme)
    for op, text in rendered.items():
        print(f"--- {op}\n{text}\n")
    missing = [s for s in stale if "section" in s]
    if missing:
        raise SystemExit(f"add these sections to README.md: {', '.join(missing)}")
    print(f"updated {args.readme}")


if __name__ == "__main__":
    main()
