"""Image parameterizations for feature visualization: what the optimizer actually changes.

Ported from tensorflow/lucid ``optvis/param`` (spatial.py, color.py) to PyTorch, for any
``H x W`` (kept exactly, never resized), 1, 3 or N channels and batches. An image
parameterization is an ``nn.Module`` whose parameters are optimized and whose ``forward()``
returns the image ``(N, C, H, W)`` in the valid range ``[0, 1]``:

    raw parameters --(irfft2 with 1/f scaling, if fft)--> --(colour decorrelation, if RGB)-->
        --(sigmoid or clamp)--> image

Why: optimizing pixels directly makes high-frequency noise; in the decorrelated Fourier
basis, plain gradient descent behaves like a whitened (preconditioned) one (Olah et al.,
"Feature Visualization", distill.pub 2017, section "Preconditioning and Parameterization").
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch import nn

from dawnet.images import load_image

__all__ = [
    "COLOR_CORRELATION_SVD_SQRT",
    "COLOR_MEAN",
    "ImageParam",
    "PixelImage",
    "FFTImage",
    "image",
    "to_tensor_image",
    "rfft2d_freqs",
    "decorrelate_color",
    "correlate_color_inverse",
]

# Square root of the empirical ImageNet colour correlation matrix, from lucid/optvis/param/color.py.
COLOR_CORRELATION_SVD_SQRT = torch.tensor(
    [[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]], dtype=torch.float64
)
# Lucid normalizes by the largest column norm so a unit step in decorrelated space stays bounded in RGB.
_COLOR_NORMALIZED = COLOR_CORRELATION_SVD_SQRT / COLOR_CORRELATION_SVD_SQRT.norm(dim=0).max()
COLOR_MEAN = (0.48, 0.46, 0.41)  # added when decorrelating without a sigmoid, as Lucid does
_FFT_MAGIC = 4.0  # lucid divides the irfft output by 4 ("is that a magic constant?" in its source)
_EPS = 1e-6


def rfft2d_freqs(h: int, w: int) -> torch.Tensor:
    """Frequency magnitude of each coefficient of a real 2-D FFT of an ``h x w`` image: ``(h, w//2+1)``."""
    fy = torch.fft.fftfreq(h, dtype=torch.float64)[:, None]
    fx = torch.fft.rfftfreq(w, dtype=torch.float64)[None, :]
    return torch.sqrt(fx * fx + fy * fy)


def decorrelate_color(t: torch.Tensor) -> torch.Tensor:
    """Map decorrelated colour coordinates ``(N, 3, H, W)`` to RGB (multiply by Lucid's matrix)."""
    m = _COLOR_NORMALIZED.to(device=t.device, dtype=t.dtype)
    return torch.einsum("ij,njhw->nihw", m, t)


def correlate_color_inverse(rgb: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`decorrelate_color`: RGB ``(N, 3, H, W)`` to decorrelated coordinates."""
    m = torch.linalg.inv(_COLOR_NORMALIZED).to(device=rgb.device, dtype=rgb.dtype)
    return torch.einsum("ij,njhw->nihw", m, rgb)


def _straight_through_clamp(t: torch.Tensor) -> torch.Tensor:
    # A plain clamp has zero gradient outside [0, 1], which freezes saturated pixels for good;
    # passing the gradient straight through lets the optimizer pull them back (Lucid's constrain_L_inf).
    return t + (t.clamp(0, 1) - t).detach()


def to_tensor_image(img, channels: int | None = None, *, size: tuple[int, int] | None = None) -> torch.Tensor:
    """A PIL image, numpy array or tensor as a float ``(N, C, H, W)`` tensor in ``[0, 1]``.

    uint8 data is divided by 255; numpy/PIL arrays are ``H x W`` or ``H x W x C``; tensors are
    ``(H, W)``, ``(C, H, W)`` or ``(N, C, H, W)``. ``channels`` converts 1 <-> 3 channels (grey is
    repeated; RGB becomes its luminance) and rejects other mismatches. ``size`` is checked, never
    used to resize: a size mismatch raises, because a hidden resize changes what the model sees.
    """
    if isinstance(img, Image.Image):
        if img.mode not in ("L", "RGB", "F", "I;16"):  # 32-bit grey scaled by its range, alpha over white
            img = load_image(img, mode="auto")
        img = np.asarray(img)
    if isinstance(img, np.ndarray):
        arr = img
        scale = 255.0 if arr.dtype == np.uint8 else (65535.0 if arr.dtype == np.uint16 else 1.0)
        t = torch.from_numpy(np.array(arr, copy=True)).double() / scale
        t = t[None] if t.ndim == 2 else t.permute(2, 0, 1)
    elif isinstance(img, torch.Tensor):
        t = img.detach()
        t = t.double() / 255.0 if t.dtype == torch.uint8 else t.double()
        if t.ndim == 2:
            t = t[None]
    else:
        raise TypeError(f"expected a PIL image, numpy array or tensor, got {type(img).__name__}")
    if t.ndim == 3:
        t = t[None]
    if t.ndim != 4:
        raise ValueError(f"image must be (H, W), (C, H, W) or (N, C, H, W), got shape {tuple(t.shape)}")
    if channels is not None and t.shape[1] != channels:
        if t.shape[1] == 1 and channels == 3:
            t = t.expand(-1, 3, -1, -1)
        elif t.shape[1] == 3 and channels == 1:
            t = 0.299 * t[:, :1] + 0.587 * t[:, 1:2] + 0.114 * t[:, 2:3]
        else:
            raise ValueError(
                f"image has {t.shape[1]} channels but the model takes {channels}: "
                f"pass an image with {channels} channels"
            )
    if size is not None and tuple(t.shape[-2:]) != tuple(size):
        raise ValueError(
            f"image is {t.shape[-2]}x{t.shape[-1]} but {size[0]}x{size[1]} was asked for: "
            f"dawnet never resizes silently; crop or resize the image yourself, or pass its size"
        )
    if float(t.min()) < -1e-6 or float(t.max()) > 1 + 1e-6:
        raise ValueError(
            f"image values must lie in [0, 1] (or be uint8), got [{float(t.min()):.3g}, "
            f"{float(t.max()):.3g}]: scale it to [0, 1] and apply normalization as `preprocess`"
        )
    return t.float().contiguous()


class ImageParam(nn.Module):
    """Base of image parameterizations: ``forward()`` -> image ``(N, C, H, W)`` in ``[0, 1]``.

    Subclasses implement ``raw()`` (unconstrained image before colour mapping) and ``set_image``.
    Attributes ``shape`` (N, C, H, W), ``decorrelate`` and ``valid`` ("sigmoid" or "clamp").
    """

    def __init__(self, shape: Sequence[int], decorrelate: bool, valid: str):
        super().__init__()
        n, c, h, w = (int(v) for v in shape)
        if min(n, c, h, w) < 1:
            raise ValueError(f"image shape (N, C, H, W) must be positive, got {tuple(shape)}")
        if decorrelate and c != 3:
            raise ValueError(f"colour decorrelation needs 3 channels, got {c}: pass decorrelate=False")
        if valid not in ("sigmoid", "clamp"):
            raise ValueError(f"valid must be 'sigmoid' or 'clamp', got {valid!r}")
        self.shape = (n, c, h, w)
        self.decorrelate = bool(decorrelate)
        self.valid = valid

    def raw(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _set_raw(self, raw: torch.Tensor) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self) -> torch.Tensor:
        t = self.raw()
        if self.decorrelate:
            t = decorrelate_color(t)
            if self.valid == "clamp":
                t = t + torch.tensor(COLOR_MEAN, device=t.device, dtype=t.dtype).view(1, 3, 1, 1)
        return torch.sigmoid(t) if self.valid == "sigmoid" else _straight_through_clamp(t)

    @torch.no_grad()
    def set_image(self, img) -> ImageParam:
        """Set the parameters so that ``forward()`` returns ``img`` (PIL, numpy or tensor in [0, 1]).

        This is how DeepDream starts from a photo or a handwritten line. With a sigmoid, values are
        pulled into ``[1e-3, 1 - 1e-3]`` first (0 and 1 are at infinity in logit space).
        """
        n, c, h, w = self.shape
        x = to_tensor_image(img, c, size=(h, w)).double()
        if x.shape[0] not in (1, n):
            raise ValueError(f"init holds {x.shape[0]} images but the batch is {n}: pass 1 or {n} images")
        x = x.expand(n, -1, -1, -1)
        if self.valid == "sigmoid":
            x = x.clamp(1e-3, 1 - 1e-3)
            t = torch.log(x) - torch.log1p(-x)
        else:
            t = x
        if self.decorrelate:
            if self.valid == "clamp":
                t = t - torch.tensor(COLOR_MEAN, dtype=t.dtype).view(1, 3, 1, 1)
            t = correlate_color_inverse(t)
        self._set_raw(t)
        return self

    def extra_repr(self) -> str:
        return f"shape={self.shape}, decorrelate={self.decorrelate}, valid={self.valid!r}"


class PixelImage(ImageParam):
    """One parameter per pixel (plus colour decorrelation and a squashing function)."""

    def __init__(
        self,
        shape: Sequence[int],
        sd: float = 0.01,
        decorrelate: bool = False,
        valid: str = "sigmoid",
        generator: torch.Generator | None = None,
    ):
        super().__init__(shape, decorrelate, valid)
        self.pixels = nn.Parameter(torch.randn(self.shape, generator=generator) * sd)

    def raw(self) -> torch.Tensor:
        return self.pixels

    def _set_raw(self, raw: torch.Tensor) -> None:
        self.pixels.copy_(raw.to(self.pixels))


class FFTImage(ImageParam):
    """Spatial Fourier parameterization with 1/f^decay frequency scaling (lucid ``fft_image``).

    The parameters are the real and imaginary parts of the half spectrum ``(N, C, H, W//2+1, 2)``;
    each coefficient is scaled by ``1 / max(f, 1/max(H, W))**decay_power * sqrt(H*W)`` (energy
    normalized, then made unitary so pixel-like learning rates work) and the image is the inverse
    real FFT at exactly ``H x W`` (odd widths included), divided by 4 as in Lucid.
    """

    def __init__(
        self,
        shape: Sequence[int],
        sd: float = 0.01,
        decay_power: float = 1.0,
        decorrelate: bool = False,
        valid: str = "sigmoid",
        generator: torch.Generator | None = None,
    ):
        super().__init__(shape, decorrelate, valid)
        n, c, h, w = self.shape
        freqs = rfft2d_freqs(h, w)
        scale = 1.0 / torch.clamp(freqs, min=1.0 / max(h, w)) ** decay_power
        scale = scale * math.sqrt(h * w)
        self.decay_power = decay_power
        self.register_buffer("scale", scale.float(), persistent=False)
        self.spectrum = nn.Parameter(torch.randn(n, c, h, w // 2 + 1, 2, generator=generator) * sd)

    def raw(self) -> torch.Tensor:
        h, w = self.shape[-2:]
        spectrum = torch.view_as_complex(self.spectrum) * self.scale
        return torch.fft.irfft2(spectrum, s=(h, w)) / _FFT_MAGIC

    def _set_raw(self, raw: torch.Tensor) -> None:
        spectrum = torch.fft.rfft2(raw.double() * _FFT_MAGIC) / self.scale.double()
        self.spectrum.copy_(torch.view_as_real(spectrum).to(self.spectrum))


def image(
    h: int,
    w: int | None = None,
    *,
    batch: int = 1,
    channels: int = 3,
    fft: bool = True,
    decorrelate: bool | None = None,
    sd: float = 0.01,
    decay_power: float = 1.0,
    valid: str = "sigmoid",
    init=None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    generator: torch.Generator | None = None,
) -> ImageParam:
    """Lucid's default image parameterization: FFT + decorrelated colour (for RGB) + sigmoid.

    Args:
        h, w: image size, kept exactly (``w`` defaults to ``h``).
        batch: number of images optimized together (e.g. with a diversity objective).
        channels: 1 (grey), 3 (RGB) or any N.
        fft: Fourier parameterization (True) or pixels (False).
        decorrelate: colour decorrelation; default True for 3 channels, else False.
        sd: standard deviation of the random initialization.
        decay_power: exponent of the 1/f frequency scaling (FFT only).
        valid: "sigmoid" (default) or "clamp" (straight-through) into [0, 1].
        init: a real image (PIL, numpy, tensor in [0, 1]) to start from instead of noise.
        device, dtype: where the parameters live (default CPU float32).
        generator: RNG for the initialization (reproducible with a seeded generator).
    """
    w = h if w is None else w
    if decorrelate is None:
        decorrelate = channels == 3
    shape = (batch, channels, h, w)
    if fft:
        p: ImageParam = FFTImage(
            shape, sd=sd, decay_power=decay_power, decorrelate=decorrelate, valid=valid, generator=generator
        )
    else:
        p = PixelImage(shape, sd=sd, decorrelate=decorrelate, valid=valid, generator=generator)
    if init is not None:
        p.set_image(init)
    return p.to(device=device, dtype=dtype) if (device is not None or dtype is not None) else p
