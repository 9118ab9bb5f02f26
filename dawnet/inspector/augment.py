"""The inspector's augmentation sliders: their ranges, their checks, and the augmented image they give."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from dawnet.diagnose import edit
from dawnet.inspector.errors import InspectorError

__all__ = ["Augment"]


@dataclass
class Augment:
    """Slider values; the neutral value of each means "off". Geometry first, then photometry."""

    rotation: float = 0.0  # degrees, counter-clockwise
    scale: float = 1.0  # zoom about the centre
    elastic: float = 0.0  # displacement in px (Simard et al. 2003), smoothed by sigma 4
    contrast: float = 1.0  # factor around the image mean
    blur: float = 0.0  # Gaussian sigma in px
    noise: float = 0.0  # Gaussian std in [0, 1] pixel units
    seed: int = 0  # noise and elastic fields; the same seed gives the same image

    RANGES = {  # (min, max, step) for the page's sliders; values outside are refused
        "rotation": (-30.0, 30.0, 0.5),
        "scale": (0.5, 2.0, 0.01),
        "elastic": (0.0, 20.0, 0.5),
        "contrast": (0.0, 3.0, 0.05),
        "blur": (0.0, 5.0, 0.1),
        "noise": (0.0, 0.5, 0.01),
        "seed": (0, 9999, 1),
    }

    @classmethod
    def from_dict(cls, d: Any, base: Augment | None = None) -> Augment:
        if not isinstance(d, dict):
            raise InspectorError(f'augment must be an object like {{"blur": 1.5}}, got {type(d).__name__}')
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise InspectorError(f"unknown augmentation(s) {unknown}; known: {sorted(names)}")
        values = asdict(base or cls())
        for k, v in d.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InspectorError(f"augment.{k} must be a finite number, got {v!r}")
            lo, hi, _ = cls.RANGES[k]
            if not lo <= v <= hi:
                raise InspectorError(f"augment.{k} = {v} is outside [{lo}, {hi}]")
            values[k] = int(v) if k == "seed" else float(v)
        return cls(**values)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The augmented copy of a (C, H, W) image in [0, 1], through dawnet.diagnose.edit."""
        if self.rotation:
            x = edit.rotate(x, self.rotation)
        if self.scale != 1.0:
            x = edit.scale(x, self.scale)
        if self.elastic:
            x = edit.elastic(x, alpha=self.elastic, sigma=4.0, seed=self.seed)
        if self.contrast != 1.0:
            x = edit.contrast(x, self.contrast).clamp(0.0, 1.0)
        if self.blur:
            x = edit.blur(x, self.blur)
        if self.noise:
            x = edit.add_noise(x, self.noise, seed=self.seed)
        return x
