"""The benchmark's profiles: sizes of the data, training budgets and decoding settings, one frozen dataclass
each (``smoke`` for tests, ``cpu`` the default, ``full`` for GPUs). Every report states its profile."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Profile", "PROFILES", "RECOGNIZERS", "DETECTORS", "get_profile"]

RECOGNIZERS = ("crnn", "attn")  # the reference recognizers every run trains
DETECTORS = {"cpu": "yolo", "gpu": "yolo_large"}


@dataclass(frozen=True)
class Profile:
    """Sizes and budgets of one benchmark profile (stated in every report)."""

    name: str
    description: str
    lines: dict  # hw-lines split sizes built (a prefix of the published split); None: the spec's own
    digits: dict
    pages: dict
    seen_lines: int  # seen-font test lines (training fonts, held-out texts)
    rec_steps: int  # optimizer steps per recognizer: the equal budget
    rec_batch: int
    rec_lr: float
    det_steps: int
    det_batch: int
    det_size: int  # letterbox size of the detector
    det_lr: float
    detector: str  # "yolo" (CPU) or "yolo_large" (GPU)
    lm_order: int
    beam: int
    eval_pages: int  # test pages read end to end (detect + recognize)
    latency_repeats: int
    latency_batch: int  # latency is measured at batch 1 and at this batch (32; smaller in smoke)
    augment: bool  # recognizer training lines
    device: str = "cpu"
    lm_weight: float = 0.5
    lm_bonus: float = 1.0
    loader_workers: int = 0  # data loader processes for training (augmentation runs there)
    det_augment: bool = True  # detector training pages (boxes follow the geometric transforms)
    train_lines: int = 0  # hw-lines training lines rendered on the fly per epoch; 0: the built train split

    def budget(self) -> str:
        return (
            f"{self.rec_steps} steps x {self.rec_batch} lines per recognizer "
            f"({self.rec_steps * self.rec_batch} training lines each), lr {self.rec_lr:g}"
            + (f", {self.train_lines} text lines rendered on the fly per epoch" if self.train_lines else "")
            + "; detector "
            f"{self.det_steps} steps x {self.det_batch} pages at {self.det_size} px, lr {self.det_lr:g}"
        )


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="Checks that the whole protocol runs (tests, CI): tiny data, a few steps. "
        "Its numbers mean nothing.",
        lines={"train": 0, "val": 0, "test": 6},
        digits={"train": 32, "val": 0, "test": 4},
        pages={"train": 4, "val": 0, "test": 2},
        seen_lines=4,
        rec_steps=3,
        rec_batch=8,
        rec_lr=1e-3,
        det_steps=3,
        det_batch=2,
        det_size=256,
        det_lr=2e-3,
        detector="yolo",
        lm_order=3,
        beam=3,
        eval_pages=2,
        latency_repeats=1,
        latency_batch=4,
        augment=False,
        det_augment=False,
        train_lines=48,
    ),
    "cpu": Profile(
        name="cpu",
        description="The default: about 30 minutes on 2 free CPU cores, data build included. CPU-sized models "
        "(crnn, attn: 0.6-0.8 M parameters) trained on hw-lines-v2 lines rendered on the fly in the 185 "
        "training families (plus digit strings), tested on the 39 unseen families: far from converged, so "
        "compare the models with each other, not with published numbers. Batches of 12, no augmentation "
        "(at this budget crnn reads its training families about as badly as the unseen ones: it under-fits), "
        "lr 3e-3 (crnn after 800 of 1500 steps: 32.1% unseen CER at lr 2e-3, 30.6% at 4e-3); see "
        "docs/bench/recognizers-v2.md.",
        lines={"train": 0, "val": 0, "test": 400},
        digits={"train": 3000, "val": 0, "test": 200},
        pages={"train": 300, "val": 0, "test": 40},
        seen_lines=200,
        rec_steps=1000,
        rec_batch=12,
        rec_lr=3e-3,
        det_steps=400,
        det_batch=8,
        det_size=384,
        det_lr=3e-3,
        detector="yolo",
        lm_order=6,
        beam=6,
        eval_pages=30,
        latency_repeats=5,
        latency_batch=32,
        augment=False,
        loader_workers=1,
        train_lines=24000,
    ),
    "full": Profile(
        name="full",
        description="For GPUs: the published held-out splits in full, lines rendered on the fly for long "
        "training (augmented), the large detector.",
        lines={"train": 0, "val": 3000, "test": 3000},
        digits=None,
        pages=None,
        seen_lines=2000,
        rec_steps=20000,
        rec_batch=64,
        rec_lr=1e-3,
        det_steps=6000,
        det_batch=16,
        det_size=640,
        det_lr=2e-3,
        detector="yolo_large",
        lm_order=6,
        beam=10,
        eval_pages=200,
        latency_repeats=20,
        latency_batch=32,
        augment=True,
        device="auto",
        loader_workers=8,
        train_lines=100000,
    ),
}


def get_profile(profile: str | Profile) -> Profile:
    """``profile`` itself, or the named one of :data:`PROFILES` (``ValueError`` naming the choices)."""
    if isinstance(profile, Profile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[profile]
