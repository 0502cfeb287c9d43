"""Number formatting shared by the README sections."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent.parent


def ms(value) -> str:
    return "" if value is None else (f"{value:.3f}" if value < 10 else f"{value:.1f}")


def speedup(value) -> str:
    return "" if value is None else f"{value:.1f}x"


def mib(value) -> str:
    return "" if value is None else f"{value / 2**20:.1f}"


def source(rows) -> str:
    first = rows[0]
    return f"{first['device']}, torch {first['torch']}, triton {first.get('triton')}, commit {first['commit']}"


def pyplot():
    """matplotlib.pyplot on the Agg backend, or None where matplotlib is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt
