"""The benchmark's figures: CER against GFLOPs and against latency with their Pareto fronts, and each model's
training curves."""

from __future__ import annotations

import math
from pathlib import Path

from dawnet.atomic import atomic_path
from dawnet.ocr.bench.schema import Results

__all__ = ["pareto_front", "draw_figures", "draw_history", "save_figure"]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower is better on both), sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def save_figure(fig, path: Path) -> Path:
    """Write a matplotlib figure atomically (the format from the suffix), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight")
    return path


def draw_figures(results: Results, folder: Path) -> list[Path]:
    """CER against GFLOPs and against latency (Pareto fronts), one point per recognizer and decoder."""
    from matplotlib.figure import Figure

    rows = [r for r in results["recognition"] if r["set"] == "test"]
    written = []
    for key, label, fname in (
        ("gflops", "GFLOPs per line", "pareto-gflops.png"),
        ("latency_ms_b1", "latency per line, batch 1 (ms)", "pareto-latency.png"),
    ):
        fig = Figure(figsize=(6.4, 4.2))
        ax = fig.subplots()
        pts = [(results["models"][r["model"]][key], 100 * r["cer"]) for r in rows]
        for (x, y), r in zip(pts, rows):
            ax.scatter([x], [y], marker="o" if r["decoder"] == "greedy" else "s")
            ax.annotate(f"{r['model']} ({r['decoder']})", (x, y), textcoords="offset points", xytext=(5, 4),
                        fontsize=8)
        front = pareto_front(pts)
        if len(front) > 1:
            ax.plot([pts[i][0] for i in front], [pts[i][1] for i in front], "--", color="gray", lw=1,
                    label="Pareto front")
            ax.legend(fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("CER on unseen fonts (%)")
        ax.set_title(f"dawnet bench ({results['profile']['name']}): CER vs {label.split(' (')[0]}")
        ax.grid(alpha=0.3)
        written.append(save_figure(fig, Path(folder) / fname))
    return written


def draw_history(agent, path: Path, title: str) -> Path | None:
    """The agent's training curves (loss, lr, momentum) as ``path``; None when it has no steps."""
    from matplotlib import pyplot as plt

    from dawnet.history_plot import draw_history as draw

    if not agent.history.steps:
        return None
    fig = draw(agent)
    fig.suptitle(f"training: {title}")
    save_figure(fig, path)
    plt.close(fig)
    return path
