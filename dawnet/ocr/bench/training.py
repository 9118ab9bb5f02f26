"""How the benchmark trains its models: every recognizer on the same lines with the same recipe
(:data:`dawnet.ocr.recipes.RECOGNIZER` at the profile's lr) and the same number of steps, and the detector on
the training pages (:data:`dawnet.ocr.recipes.DETECTOR`)."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from dawnet.ocr.bench.data import DIGITS, LINES, PAGES
from dawnet.ocr.bench.profiles import Profile
from dawnet.ocr.bench.schema import DataResult
from dawnet.ocr.recipes import DETECTOR, RECOGNIZER

__all__ = ["line_loader", "build_recognizer", "train_recognizer", "train_detector"]


class _Lines(torch.utils.data.ConcatDataset):
    """The training parts, concatenated; ``set_epoch`` reaches the parts rendered on the fly."""

    def set_epoch(self, epoch: int) -> None:
        for part in self.datasets:
            if hasattr(part, "set_epoch"):
                part.set_epoch(epoch)


def line_loader(data: dict[str, DataResult], height: int, charset, batch: int, augment: bool, seed: int,
                workers: int = 0, train_lines: int = 0):
    """Batches of the hw-lines + digits-v1 training lines, bucketed by length (seeded by epoch).

    ``train_lines`` > 0: that many hw-lines training lines per epoch are rendered on the fly from the spec
    (new images every epoch, as ``dawnet train --data SPEC``), batched by text length, which tracks their width
    without rendering them; 0: the built training split, batched by pixel width."""
    from torch.utils.data import DataLoader

    from dawnet.ocr.data.datasets import (
        LineAugment,
        LineDataset,
        SyntheticLineDataset,
        WidthBucketSampler,
        collate_lines,
    )

    aug = LineAugment() if augment else None
    digits = LineDataset(Path(data[DIGITS]["path"]) / "train" / "labels.tsv", height=height, charset=charset,
                         augment=aug, seed=seed)
    if train_lines:
        from dawnet.ocr.data.generate import SpecGenerator
        from dawnet.ocr.data.specs import spec

        gen = SpecGenerator(spec(LINES))
        lines = SyntheticLineDataset(gen, "train", length=train_lines, height=height, charset=charset,
                                     augment=aug)
        texts = gen.texts("train")
        widths = [len(texts[i % len(texts)]) for i in range(train_lines)] + [len(t) for t in digits.texts]
    else:
        lines = LineDataset(Path(data[LINES]["path"]) / "train" / "labels.tsv", height=height, charset=charset,
                            augment=aug, seed=seed)
        widths = lines.widths() + digits.widths()
    sampler = WidthBucketSampler(widths, batch, shuffle=True, drop_last=True, seed=seed)
    return DataLoader(_Lines([lines, digits]), batch_sampler=sampler, collate_fn=collate_lines,
                      num_workers=workers)


def build_recognizer(name: str, charset, height: int = 32):
    """A recognizer by preset name or ``module:factory``, sized for ``charset`` (CTC or attention head)."""
    import dawnet.ocr.models  # noqa: F401  (registers the presets)
    from dawnet.registry import create_model

    try:
        model = create_model(name, num_classes=charset.num_ctc_classes, height=height)
    except TypeError as e:
        raise ValueError(
            f"--model {name}: its constructor must accept num_classes= and height= (like the "
            f"recognizer presets): {e}"
        ) from None
    kind = getattr(model, "head_kind", None)
    if kind == "attn":
        model = create_model(name, num_classes=charset.num_attn_classes, height=height)
    elif kind != "ctc":
        raise ValueError(
            f"--model {name} builds a {type(model).__name__} without head_kind 'ctc' or 'attn': the "
            "benchmark trains line recognizers (see dawnet.ocr.models.Recognizer)"
        )
    return model


def train_recognizer(name: str, data: dict[str, DataResult], charset, profile: Profile, seed: int, device,
                     progress: bool):
    """Train recognizer ``name`` for the profile's budget; returns (agent, training seconds)."""
    from dawnet.ocr.agents import recognizer_agent

    torch.manual_seed(seed)
    model = build_recognizer(name, charset)
    loader = line_loader(data, model.height, charset, profile.rec_batch, profile.augment, seed,
                         profile.loader_workers, profile.train_lines)
    recipe = RECOGNIZER.with_lr(profile.rec_lr)
    opt, schedule = recipe.build(model.parameters(), profile.rec_steps)
    agent = recognizer_agent(model, opt, charset, schedule=schedule, grad_clip=recipe.grad_clip, seed=seed,
                             device=device)
    start = time.perf_counter()
    agent.fit(loader, steps=profile.rec_steps, progress=progress)
    return agent, time.perf_counter() - start


def train_detector(data: dict[str, DataResult], profile: Profile, seed: int, device, progress: bool,
                   iou_aware: bool = True):
    """Train the profile's detector on the training pages; returns (agent, training seconds)."""
    import dawnet.ocr.models.yolo  # noqa: F401  (registers yolo)
    from dawnet.ocr.detection import DetectionAgent, DetectionAugment, DetectionDataset, detection_loader
    from dawnet.registry import create_model

    torch.manual_seed(seed)
    pages = Path(data[PAGES]["path"])
    train = DetectionDataset(pages / "train" / "coco.json", profile.det_size,
                             augment=DetectionAugment() if profile.det_augment else None, seed=seed)
    model = create_model(profile.detector, size=profile.det_size)
    recipe = DETECTOR.with_lr(profile.det_lr)
    opt, schedule = recipe.build(model.parameters(), profile.det_steps)
    agent = DetectionAgent(model, opt, schedule=schedule, size=profile.det_size, grad_clip=recipe.grad_clip,
                           seed=seed, device=device, iou_aware=iou_aware)
    loader = detection_loader(train, min(profile.det_batch, len(train)), shuffle=True,
                              workers=profile.loader_workers)
    start = time.perf_counter()
    agent.fit(loader, steps=profile.det_steps, progress=progress)
    return agent, time.perf_counter() - start
