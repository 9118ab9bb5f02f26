"""Contact sheets of built data: line images with their transcriptions, pages with their boxes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from dawnet.ocr.data.builder import read_manifest

__all__ = ["contact_sheet"]


def contact_sheet(data_dir: str | os.PathLike, split: str = "train", n: int = 16, seed: int = 0,
                  columns: int | None = None) -> Figure:
    """A matplotlib ``Figure`` showing ``n`` random items of ``split`` of a built data folder."""
    data_dir = Path(data_dir)
    manifest = read_manifest(data_dir)
    if manifest is None:
        raise FileNotFoundError(f"no manifest.json in {data_dir}: build it first (dawnet data build SPEC --out DIR)")
    items_path = data_dir / split / "items.jsonl"
    if not items_path.is_file():
        raise FileNotFoundError(f"{items_path} is missing: split {split!r} was not built")
    items = [json.loads(line) for line in items_path.read_text(encoding="utf-8").splitlines()]
    if not items:
        raise ValueError(f"split {split!r} of {data_dir} is empty")
    rng = np.random.default_rng(seed)
    pick = sorted(rng.choice(len(items), size=min(n, len(items)), replace=False).tolist())
    kind = manifest["spec"]["kind"]
    name = manifest["spec"]["name"]
    if kind == "pages":
        cols = columns or min(4, len(pick))
        rows = int(np.ceil(len(pick) / cols))
        fig = Figure(figsize=(3.2 * cols, 4.6 * rows))
        for k, i in enumerate(pick):
            ax = fig.add_subplot(rows, cols, k + 1)
            it = items[i]
            ax.imshow(Image.open(data_dir / split / it["path"]), cmap="gray", vmin=0, vmax=255)
            for (x0, y0, x1, y1), kd in zip(it["boxes"], it["kinds"]):
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=0.8,
                                       edgecolor="tab:red" if kd == "hw" else "tab:blue"))
            ax.set_title(f"{it['path'].split('/')[-1]}: {len(it['boxes'])} lines", fontsize=8)
            ax.axis("off")
    else:
        cols = columns or (2 if len(pick) > 6 else 1)
        rows = int(np.ceil(len(pick) / cols))
        fig = Figure(figsize=(6.5 * cols, 0.95 * rows + 0.6))
        for k, i in enumerate(pick):
            ax = fig.add_subplot(rows, cols, k + 1)
            it = items[i]
            ax.imshow(Image.open(data_dir / split / it["path"]), cmap="gray", vmin=0, vmax=255, aspect="equal")
            font = Path(it.get("font", "")).stem
            ax.set_title(f"{it['text']}  [{font}]", fontsize=7, loc="left")
            ax.axis("off")
    fig.suptitle(f"{name} ({manifest['spec'].get('size', 'default')}) - {split}", fontsize=10)
    fig.tight_layout()
    return fig
