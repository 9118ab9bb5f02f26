"""Images in and out of the inspector: bytes and files decoded through :mod:`dawnet.images` after a pixel-count
check on the header, the working image as floats, and PNG data URLs for the page.

The working image is ``(C, H, W)`` floats in [0, 1], dark ink (:data:`INK` = 0) on light paper (:data:`PAPER` = 1).
"""

from __future__ import annotations

import base64
import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from dawnet.diagnose import edit
from dawnet.images import ImageError, image_size, load_image, to_gray, to_rgb
from dawnet.inspector.errors import InspectorError

__all__ = ["MAX_PIXELS", "PAPER", "INK", "decode_image", "open_image", "checked_pixels", "png_bytes", "png_data_url",
           "to_float", "as_raw"]

MAX_PIXELS = 16_000_000  # largest upload or data image decoded (16 MP: a 300 dpi A4 scan is ~8.7 MP)
PAPER, INK = 1.0, 0.0


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS, name: str = "the upload") -> Image.Image:
    """Decode image bytes, refusing non-images (400) and images over ``max_pixels`` (413) before their pixels are
    read; a decompression bomb, a truncated or corrupt file is a 400 naming the problem."""
    if not data:
        raise InspectorError(f"{name} is empty: send the bytes of a PNG, JPEG or other image file")
    try:
        checked_pixels(image_size(data, name=name), max_pixels, name)
        return load_image(data, mode=None, name=name)
    except ImageError as e:
        raise InspectorError(str(e)) from None


def open_image(path: str | Path, max_pixels: int = MAX_PIXELS, name: str | None = None) -> Image.Image:
    """An image file (a data set sample, ``--image``), checked as :func:`decode_image` checks uploads."""
    path = Path(path)
    label = name or path.name
    if not path.is_file():
        raise InspectorError(f"image {path} does not exist", status=404)
    try:
        checked_pixels(image_size(path, name=label), max_pixels, label)
        return load_image(path, mode=None, name=label)
    except ImageError as e:
        raise InspectorError(str(e)) from None


def checked_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    """Refuse an image of ``size`` (width, height) that is empty (400) or over ``max_pixels`` (413)."""
    w, h = size
    if w < 1 or h < 1:
        raise InspectorError(f"{name} is empty ({w}x{h} px)")
    if w * h > max_pixels:
        raise InspectorError(
            f"{name} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}; crop or "
            "downscale it (or start the inspector with a larger --max-pixels)",
            status=413,
        )


def png_bytes(img: torch.Tensor | np.ndarray) -> bytes:
    """PNG bytes of a ``(C, H, W)`` float image in [0, 1] (or an ``(H, W)`` array): grey for one channel, RGB
    for three; values outside [0, 1] are clipped."""
    a = (
        img.detach().float().cpu().numpy()
        if isinstance(img, torch.Tensor)
        else np.asarray(img, dtype=np.float32)
    )
    if a.ndim == 3:
        a = a[0] if a.shape[0] == 1 else np.transpose(a[:3], (1, 2, 0))
    a = np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).save(buf, format="PNG", compress_level=1)  # fast: the page asks for one per update
    return buf.getvalue()


def png_data_url(img: torch.Tensor | np.ndarray) -> str:
    """A ``data:image/png`` URL of a ``(C, H, W)`` float image in [0, 1] (or an ``(H, W)`` array)."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(img)).decode("ascii")


def to_float(im: Image.Image, channels: int) -> torch.Tensor:
    """PIL -> (C, H, W) float in [0, 1]: grey for 1 channel, RGB for 3 (16-bit grey scaled, alpha over white)."""
    return edit.as_image(np.asarray(to_gray(im) if channels == 1 else to_rgb(im)))


def as_raw(x: torch.Tensor) -> np.ndarray:
    """(C, H, W) float -> the numpy image agents' ``prepare`` reads ((H, W) grey or (H, W, 3))."""
    a = x.detach().float().cpu().clamp(0, 1).numpy()
    return a[0] if a.shape[0] == 1 else np.ascontiguousarray(np.transpose(a, (1, 2, 0)))
