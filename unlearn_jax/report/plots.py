"""Matplotlib (Agg) figures written straight to PNG files."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

MODEL_COLOURS = {"model": "tab:red", "original": "tab:grey", "retrained": "tab:blue", "gold": "tab:blue"}


def lines(path: Path, series: Mapping[str, tuple[Sequence[float], Sequence[float]]], *, title: str, xlabel: str,
          ylabel: str, styles: Mapping[str, dict] | None = None) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=name, **(styles or {}).get(name, {}))
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def grouped_bars(path: Path, groups: Sequence[str], series: Mapping[str, Sequence[float]], *, title: str,
                 ylabel: str, colours: Mapping[str, str] | None = None) -> None:
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(groups) + 2), 3.8))
    width = 0.8 / max(len(series), 1)
    x = np.arange(len(groups))
    for k, (name, values) in enumerate(series.items()):
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=name,
               color=(colours or {}).get(name))
    ax.set_xticks(x, groups, rotation=25, ha="right", fontsize=8)
    ax.set(title=title, ylabel=ylabel)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def heatmap(path: Path, matrix, *, row_labels: Sequence[str], col_labels: Sequence[str], title: str,
            vmin: float | None = None, vmax: float | None = None) -> None:
    matrix = np.asarray(matrix, dtype=float)
    fig, ax = plt.subplots(figsize=(1.2 * len(col_labels) + 2.5, 0.5 * len(row_labels) + 1.5))
    image = ax.imshow(matrix, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(col_labels)), col_labels, fontsize=8)
    ax.set_yticks(range(len(row_labels)), row_labels, fontsize=8)
    for (i, j), value in np.ndenumerate(matrix):
        ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                color="white" if value < (vmax or matrix.max()) / 2 else "black")
    fig.colorbar(image, ax=ax)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def histogram(path: Path, samples: Mapping[str, Sequence[float]], *, title: str, xlabel: str, bins: int = 40) -> None:
    """Overlaid histograms on shared bins, each labelled with its mean."""
    values = {name: np.asarray(v, dtype=float) for name, v in samples.items()}
    everything = np.concatenate(list(values.values()))
    edges = np.linspace(everything.min(), everything.max() + 1e-9, bins)
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for name, v in values.items():
        ax.hist(v, bins=edges, alpha=0.6, label=f"{name} (mean {v.mean():.2f})",
                color=MODEL_COLOURS.get(name, None))
    ax.set(title=title, xlabel=xlabel, ylabel="records")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
