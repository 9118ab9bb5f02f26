"""Contact sheets: line images with their transcriptions, pages with their boxes (from a built folder or
rendered from a spec), and one line per font family of a split."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from dawnet.images import load_image
from dawnet.ocr.data.builder import read_manifest

__all__ = ["contact_sheet", "spec_sheet", "family_sheet", "FAMILY_TEXT"]

FAMILY_TEXT = "Jackdaws love my big sphinx of quartz, 1987!"  # every letter once, digits, punctuation


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
            ax.imshow(load_image(data_dir / split / it["path"]), cmap="gray", vmin=0, vmax=255)
            for (x0, y0, x1, y1), kd in zip(it["boxes"], it["kinds"]):
                ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, lw=0.8,
                                       edgecolor="tab:red" if kd == "hw" else "tab:blue"))
            ax.set_title(f"{it['path'].split('/')[-1]}: {len(it['boxes'])} lines", fontsize=8)
            ax.axis("off")
    else:
        entries = [(load_image(data_dir / split / items[i]["path"]),
                    f"{items[i]['text']}  [{Path(items[i].get('font', '')).stem}]") for i in pick]
        return _lines_figure(entries, f"{name} ({manifest['spec'].get('size', 'default')}) - {split}", columns)
    fig.suptitle(f"{name} ({manifest['spec'].get('size', 'default')}) - {split}", fontsize=10)
    fig.tight_layout()
    return fig


def _lines_figure(entries: list[tuple[Image.Image, str]], title: str, columns: int | None = None) -> Figure:
    cols = columns or (2 if len(entries) > 6 else 1)
    rows = int(np.ceil(len(entries) / cols))
    fig = Figure(figsize=(6.5 * cols, 0.95 * rows + 0.6))
    for k, (im, label) in enumerate(entries):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(im, cmap="gray", vmin=0, vmax=255, aspect="equal")
        ax.set_title(label, fontsize=7, loc="left")
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def spec_sheet(spec, split: str = "test", n: int = 60, seed: int = 0, fonts_dir: str | os.PathLike | None = None,
               columns: int | None = None) -> Figure:
    """``n`` random lines of ``split`` of a lines spec, rendered exactly as ``dawnet data build`` writes them
    (no build needed): the same items, seeds and fonts."""
    from dawnet.ocr.data.generate import SpecGenerator
    from dawnet.ocr.data.specs import spec as get_spec

    s = get_spec(spec) if isinstance(spec, str) else spec
    if s.kind != "lines":
        raise ValueError(f"spec {s.name} holds {s.kind}; a spec sheet shows lines (build pages and show the folder)")
    gen = SpecGenerator(s, fonts_dir)
    total = s.sizes[split]
    pick = sorted(np.random.default_rng(seed).choice(total, size=min(n, total), replace=False).tolist())
    names = {f.path: f.family for fs in gen.fonts.values() for f in fs}
    entries = []
    for i in pick:
        line = gen.item(split, i)
        entries.append((line.image, f"{line.text}  [{names.get(line.font, Path(line.font).stem)}]"))
    return _lines_figure(entries, f"{s.name} ({s.size}) - {split}: {len(pick)} random lines", columns)


def family_sheet(spec, split: str = "test", text: str = FAMILY_TEXT, seed: int = 0,
                 fonts_dir: str | os.PathLike | None = None, columns: int | None = None) -> Figure:
    """One line of ``text`` per font family of ``split`` of a spec (its regular file), drawn with that
    split's synthesizer settings: what the split's hands look like."""
    from dawnet.ocr.data.generate import SpecGenerator
    from dawnet.ocr.data.specs import spec as get_spec
    from dawnet.ocr.data.synth import LineSynthesizer, SynthConfig

    s = get_spec(spec) if isinstance(spec, str) else spec
    gen = SpecGenerator(s, fonts_dir)
    fields = set(SynthConfig.__dataclass_fields__)
    synth = LineSynthesizer(gen.fonts[split], SynthConfig(**{k: v for k, v in s.synth_for(split).items()
                                                              if k in fields}))
    first: dict[str, object] = {}
    for f in gen.fonts[split]:
        first.setdefault(f.family, f)
    entries = []
    for k, (family, f) in enumerate(sorted(first.items(), key=lambda kv: kv[0].lower())):
        line = synth.render(text, np.random.default_rng([seed, k]), font=f)
        entries.append((line.image, family))
    return _lines_figure(entries, f"{s.name} - {split}: {len(entries)} families", columns or 3)
