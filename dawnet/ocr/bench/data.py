"""The benchmark's data: the versioned specs built (or reused, by checksum) into a data folder, sized by the
profile as a prefix of each published split, the seen-font test lines rendered in memory, and the test sets."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import torch

from dawnet.checksum import sha256_file
from dawnet.ocr.bench.profiles import Profile
from dawnet.ocr.bench.schema import DataResult
from dawnet.ocr.data.specs import BENCH_DATA

__all__ = ["LINES", "DIGITS", "PAGES", "SPECS", "SeenFontLines", "prepare_data", "line_test_sets", "log"]

LINES, DIGITS, PAGES = BENCH_DATA["lines"], BENCH_DATA["digits"], BENCH_DATA["pages"]  # the specs the bench uses
SPECS = (LINES, DIGITS, PAGES)


def log(progress: bool, msg: str) -> None:
    """A ``[bench]`` progress message (nothing when ``progress`` is off)."""
    if progress:
        print(f"[bench] {msg}", flush=True)


def _profile_spec(name: str, sizes: dict | None, profile: Profile):
    from dawnet.ocr.data.specs import spec

    s = spec(name)
    if sizes is None:
        return s
    return dataclasses.replace(s, sizes=dict(sizes), size=f"bench-{profile.name}")


def prepare_data(profile: Profile, data_dir: Path, progress: bool = True,
                 workers: int | None = None) -> dict[str, DataResult]:
    """Build (or reuse, by checksum) the data sets of ``profile`` under ``data_dir``; returns their info."""
    from dawnet.ocr.data import build

    out = {}
    for name, sizes in zip(SPECS, (profile.lines, profile.digits, profile.pages)):
        s = _profile_spec(name, sizes, profile)
        folder = Path(data_dir) / f"{name}-{s.size}"
        log(progress, f"data {name} ({', '.join(f'{k} {v}' for k, v in s.sizes.items())}) -> {folder}")
        manifest = build(s, folder, workers=workers, progress=progress)
        out[name] = {
            "path": str(folder),
            "spec": s.name,
            "size": s.size,
            "sizes": dict(s.sizes),
            "spec_digest": s.digest(),
            "manifest_sha256": sha256_file(folder / "manifest.json"),
            "build_seconds": manifest.get("build_seconds"),
        }
    return out


class SeenFontLines(torch.utils.data.Dataset):
    """Held-out line texts written in the *training* fonts: the seen-font test set (rendered in memory)."""

    def __init__(self, n: int, height: int, seed_offset: int = 1000):
        from dawnet.ocr.data.generate import SpecGenerator
        from dawnet.ocr.data.specs import spec
        from dawnet.ocr.data.synth import LineSynthesizer, SynthConfig

        gen = SpecGenerator(spec(LINES))
        # drawn as the test lines are (the spec's held-out config), so seen vs unseen compares fonts alone
        fields = set(SynthConfig.__dataclass_fields__)
        cfg = SynthConfig(**{k: v for k, v in gen.spec.synth_for("test").items() if k in fields})
        synth = LineSynthesizer(gen.fonts["train"], cfg)
        texts = gen.texts("val")
        self.items = []
        for i in range(n):
            rng = np.random.default_rng([gen.spec.seed, seed_offset, i])
            line = synth.render(texts[i % len(texts)], rng)
            self.items.append((line.image, line.text))
        self.height = height
        self.digest = hashlib.sha256(b"".join(im.tobytes() + t.encode() for im, t in self.items)).hexdigest()

    def info(self) -> DataResult:
        """Its entry in ``results["data"]``: size, checksum and what it is."""
        return {"lines": len(self.items), "sha256": self.digest,
                "what": f"{LINES} val texts in the training fonts, drawn as its test lines, seeds (1, 1000, i)"}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        from dawnet.ocr.charset import normalize
        from dawnet.ocr.data.datasets import to_tensor

        im, text = self.items[i]
        x = to_tensor(im, self.height)
        return {"image": x, "width": x.shape[-1], "text": normalize(text), "source": f"seen/{i}"}


def line_test_sets(data: dict[str, DataResult], height: int, seen: SeenFontLines) -> dict:
    """The recognizers' test sets: ``seen`` (training fonts), ``test`` (unseen fonts), ``digits``."""
    from dawnet.ocr.data.datasets import LineDataset

    return {
        "seen": seen,
        "test": LineDataset(Path(data[LINES]["path"]) / "test" / "labels.tsv", height=height),
        "digits": LineDataset(Path(data[DIGITS]["path"]) / "test" / "labels.tsv", height=height),
    }
