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
    lines: dict  # hw-lines-v1 split sizes (a prefix of the published split); None: the spec's own
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

    def budget(self) -> str:
        return (
            f"{self.rec_steps} steps x {self.rec_batch} lines per recognizer "
            f"({self.rec_steps * self.rec_batch} training lines each), lr {self.rec_lr:g}; detector "
            f"{self.det_steps} steps x {self.det_batch} pages at {self.det_size} px, lr {self.det_lr:g}"
        )


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="Checks that the whole protocol runs (tests, CI): tiny data, a few steps. "
        "Its numbers mean nothing.",
        lines={"train": 48, "val": 0, "test": 6},
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
    ),
    "cpu": Profile(
        name="cpu",
        description="The default: under 20 minutes on 2 free CPU cores. Short training on prefixes of the "
        "published splits with CPU-sized models (crnn, attn: 0.6-0.8 M parameters): far from converged, so "
        "compare the models with each other, not with published numbers. Batches of 16 and no augmentation: at "
        "this budget both learn faster per line (crnn unseen-font CER after 19,200 lines: 63.3% with "
        "augmentation, 54.7% without at batch 32, 44.9% at batch 12).",
        lines={"train": 4000, "val": 0, "test": 300},
        digits={"train": 2000, "val": 0, "test": 200},
        pages={"train": 300, "val": 0, "test": 40},
        seen_lines=150,
        rec_steps=700,
        rec_batch=16,
        rec_lr=2e-3,
        det_steps=500,
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
    ),
    "full": Profile(
        name="full",
        description="For GPUs: the published splits in full, long training, the large detector.",
        lines=None,
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
    ),
}


def get_profile(profile: str | Profile) -> Profile:
    """``profile`` itself, or the named one of :data:`PROFILES` (``ValueError`` naming the choices)."""
    if isinstance(profile, Profile):
        return profile
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    return PROFILES[profile]
