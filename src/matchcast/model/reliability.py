"""Reliability diagrams of matchcast against Dixon-Coles, one panel per outcome or market (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

_MODELS = (("matchcast", "matchcast", "-o"), ("dc", "Dixon-Coles", "--s"))


def plot_reliability(
    table: pd.DataFrame, path: Path, title: str, key: str, panels: dict[str, str], min_n: int = 20
) -> None:
    """One panel per value of ``table[key]`` (titled by ``panels``): mean forecast against observed frequency."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = 13 if len(panels) == 3 else 4.6 * len(panels) + 0.3
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 4.6), sharey=True)
    for ax, (value, name) in zip(axes, panels.items(), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", lw=1, ls=":")
        for model, label, style in _MODELS:
            t = table[(table["model"] == model) & (table[key] == value) & (table["n"] >= min_n)]
            ax.plot(t["mean_forecast"], t["observed"], style, ms=4, label=label)
        ax.set_title(name)
        ax.set_xlabel("forecast probability")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("observed frequency")
    axes[0].legend(loc="upper left")
    fig.suptitle(f"{title} (bins of at least {min_n} matches)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
