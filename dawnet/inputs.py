"""Turn the most basic data point (a path, a PIL image, a numpy array, a tensor) into a model input batch."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from dawnet import images

__all__ = ["ImageInput"]


@dataclass
class ImageInput:
    """How raw images become model input: channels, size, value range and normalization.

    ``channels`` 1 or 3 converts colour to grey or back; ``height`` alone resizes keeping the aspect ratio;
    ``height`` and ``width`` resize exactly; pixel values become floats in [0, 1], then ``(x - mean) / std``.
    Saved in checkpoints, so ``Agent.infer`` works from a path with no knowledge of the preprocessing.
    """

    channels: int | None = None
    height: int | None = None
    width: int | None = None
    mean: float = 0.0
    std: float = 1.0

    def __post_init__(self):
        if self.channels not in (None, 1, 3):
            raise ValueError(f"channels must be 1, 3 or None, got {self.channels}")
        if self.std == 0:
            raise ValueError("std must not be 0")

    def to_dict(self) -> dict:
        return asdict(self)

    def __call__(self, raw) -> torch.Tensor:
        """A (1, C, H, W) float tensor from one image, or (N, C, H, W) from a batch tensor."""
        if isinstance(raw, (str, os.PathLike, Image.Image, bytes)):
            x = self._from_pil(raw)
        elif isinstance(raw, np.ndarray) and not np.issubdtype(raw.dtype, np.floating):
            _from_array(raw)  # the shape check, with this module's message
            x = self._from_pil(raw)
        elif isinstance(raw, np.ndarray):
            x = _from_array(raw)
        elif isinstance(raw, torch.Tensor):
            x = raw.float() if raw.is_floating_point() else raw.float() / 255.0
            if x.dim() == 2:
                x = x[None]
            if x.dim() == 3:
                x = x[None]
            if x.dim() != 4:
                raise ValueError(f"image tensor must be (H, W), (C, H, W) or (N, C, H, W), got {tuple(raw.shape)}")
        else:
            raise TypeError(f"cannot make an image from {type(raw).__name__}: give a path, bytes, a PIL image, a "
                            "numpy array or a tensor")
        x = self._channels(x)
        x = self._resize(x)
        return (x - self.mean) / self.std

    def _from_pil(self, raw) -> torch.Tensor:
        """8-bit grey or RGB as the model's channels ask (a grey image stays grey when they do not say)."""
        mode = {1: "L", 3: "RGB"}.get(self.channels, "auto")
        return _from_array(np.asarray(images.load_image(raw, mode=mode)))

    def _channels(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        if self.channels is None or c == self.channels:
            return x
        if self.channels == 1 and c == 3:  # ITU-R 601 luma, as PIL's convert("L")
            w = torch.tensor([0.299, 0.587, 0.114], dtype=x.dtype).view(1, 3, 1, 1)
            return (x * w).sum(1, keepdim=True)
        if self.channels == 3 and c == 1:
            return x.expand(-1, 3, -1, -1).contiguous()
        raise ValueError(f"the model wants {self.channels} channel(s); the image has {c}")

    def _resize(self, x: torch.Tensor) -> torch.Tensor:
        if self.height is None and self.width is None:
            return x
        h, w = x.shape[-2:]
        new_h = self.height or round(h * self.width / w)
        new_w = self.width or max(1, round(w * self.height / h))
        if (new_h, new_w) == (h, w):
            return x
        return torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False,
                                               antialias=True)


def _from_array(a: np.ndarray) -> torch.Tensor:
    if a.ndim == 2:
        a = a[:, :, None]
    if a.ndim != 3 or a.shape[2] not in (1, 3, 4):
        raise ValueError(f"image array must be (H, W) or (H, W, C) with C in 1, 3, 4; got shape {a.shape}")
    if a.shape[2] == 4:
        a = a[:, :, :3]
    if a.size == 0:
        raise ValueError(f"image is empty (shape {a.shape})")
    t = torch.from_numpy(np.array(a, copy=True)).permute(2, 0, 1)[None]  # PIL arrays are read-only
    return t.float() / 255.0 if a.dtype == np.uint8 else t.float()
