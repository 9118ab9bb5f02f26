"""The one image loader: a path, bytes, a PIL image or a numpy array to an 8-bit grayscale (or RGB) image.

Every part of dawnet that reads pixels (``dawnet read``, eval, training data, the data formats, page reading, the
inspector) goes through :func:`load_image`, so an image reads the same everywhere. How each kind of image becomes
8-bit, dark ink on light paper:

- ``1``, ``L``, ``RGB``, ``YCbCr``, ``CMYK``, ``HSV``, ``LAB``: Pillow's conversion (ITU-R 601 luma for grey).
- 16-bit grey (``I;16``, ``I;16B``, ``I;16L``, ``I;16N``): scaled by the format's range, ``round(v * 255 / 65535)``,
  never clipped (``convert("L")`` clips every value above 255 to white, so a 16-bit scan reads as blank).
- 32-bit integer grey (``I``): scaled by the range its file states (16-bit PGM/PPM, 16- or 32-bit, signed or
  unsigned TIFF); an image without one (built in memory) is scaled by the smallest of 8, 16 or 31 bits that
  holds its largest value.
  Negative values read as black.
- float grey (``F``): values all within ``[0, 1]`` are read as 0 = black, 1 = white; otherwise as 0-255 levels.
  Values are rounded and clipped to 0-255; NaN is refused.
- with transparency (``RGBA``, ``LA``, ``PA``, ``La``, ``RGBa``, ``P`` with a transparent colour): composited over
  white. Ink drawn only in the alpha channel in a light colour (every visible pixel one colour of luma >= 128, so
  over white it would vanish) is read as black ink of that alpha.
- EXIF orientation is applied (``ImageOps.exif_transpose``); of a multi-frame file (TIFF pages, GIF, APNG) the
  first frame is read, with a :class:`MultiFrameWarning`.

Pillow's decompression-bomb guard (``PIL.Image.MAX_IMAGE_PIXELS``) stays on. A missing file raises
``FileNotFoundError``; a corrupt, truncated, oversized or unsupported image raises :class:`ImageError` (a
``ValueError``) with one line naming the file and the problem.
"""

from __future__ import annotations

import io
import os
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageError", "MultiFrameWarning", "GRAY_MODES", "load_image", "to_gray", "to_rgb", "image_size",
           "is_blank"]

GRAY_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
"""Pillow modes that hold one grey channel (with or without alpha)."""

_SIXTEEN = ("I;16", "I;16B", "I;16L", "I;16N")
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, IndexError, KeyError, TypeError, struct.error,
                  zlib.error, Image.DecompressionBombError)


class ImageError(ValueError):
    """An image that cannot be read: ``cannot read image NAME: REASON`` (``.name`` and ``.reason`` apart)."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"cannot read image {name}: {reason}")
        self.name, self.reason = name, reason


class MultiFrameWarning(UserWarning):
    """A multi-frame image (TIFF pages, GIF, APNG) of which only the first frame is read."""


def load_image(source, *, mode: str | None = "L", name: str | None = None) -> Image.Image:
    """Read ``source`` (a path, bytes, a PIL image or a numpy array) as a loaded image in ``mode``.

    ``mode="L"`` gives 8-bit grey and ``"RGB"`` 8-bit colour, converted as the module docstring says;
    ``"auto"`` gives ``L`` for a grey image (:data:`GRAY_MODES`) and ``RGB`` for any other; ``None`` gives the
    image as decoded (EXIF orientation applied, first frame), e.g. to look at its mode.
    ``name`` is what error messages call the input (default: the path, or "the image bytes"). A PIL image is
    read at its current frame; its EXIF orientation is applied too.
    """
    if mode not in ("L", "RGB", "auto", None):
        raise ValueError(f"mode must be 'L', 'RGB', 'auto' or None, got {mode!r}")
    if isinstance(source, np.ndarray):
        im, label = _from_array(source, name or "the image array"), name or "the image array"
    elif isinstance(source, Image.Image):
        label = name or "the image"
        try:
            im = _decoded(source, label, first_frame=False)
        except _DECODE_ERRORS as e:  # a lazily opened image whose file is damaged
            raise ImageError(label, _reason(e)) from None
    elif isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "the image bytes"
        data = bytes(source)
        if not data:
            raise ImageError(label, "it is empty (0 bytes)")
        im = _open(io.BytesIO(data), label, data[:8])
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        label = name or str(path)
        im = _open(path, label, _head(path, label))
    else:
        raise TypeError(f"cannot read an image from {type(source).__name__}: give a path, bytes, a PIL image or a "
                        "numpy array")
    if mode == "auto":
        mode = "L" if im.mode in GRAY_MODES else "RGB"
    return im if mode is None else _convert(im, mode, label)


def to_gray(image: Image.Image | np.ndarray) -> Image.Image:
    """An open image (or array) as 8-bit grey ``L``, converted as :func:`load_image` does; use it instead of
    ``image.convert("L")``, which clips 16-bit grey to white and drops transparency."""
    return load_image(image, mode="L")


def to_rgb(image: Image.Image | np.ndarray) -> Image.Image:
    """An open image (or array) as 8-bit ``RGB``, transparency composited over white as :func:`load_image` does."""
    return load_image(image, mode="RGB")


def image_size(source: str | os.PathLike | bytes, *, name: str | None = None) -> tuple[int, int]:
    """``(width, height)`` of an image file (or its bytes) as :func:`load_image` returns it (EXIF rotation
    applied), from the header alone: a cheap check that a file is an image. Raises as :func:`load_image` does."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        label, fp = name or "the image bytes", io.BytesIO(bytes(source))
        head = bytes(source[:8])
    else:
        path = Path(source)
        label, fp = name or str(path), path
        head = _head(path, label)
    try:
        with Image.open(fp) as im:
            w, h = im.size
            orientation = _header_orientation(im)
    except UnidentifiedImageError:
        raise ImageError(label, _not_an_image(head)) from None
    except _DECODE_ERRORS as e:
        raise ImageError(label, _reason(e)) from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def is_blank(image: Image.Image | np.ndarray, tolerance: int = 8) -> bool:
    """True when a grey image holds no ink: every pixel within ``tolerance`` levels (of 255) of one value.

    What a line that was read wrongly (a clipped 16-bit scan, ink lost with its alpha) or an empty crop looks
    like; datasets count such lines so that they are reported, not scored silently.
    """
    a = np.asarray(image if isinstance(image, np.ndarray) else to_gray(image))
    if a.size == 0:
        return True
    return int(a.max()) - int(a.min()) <= tolerance


# -- decoding ----------------------------------------------------------------------------------------------


def _reason(e: BaseException) -> str:
    text = str(e).strip().rstrip(".") or type(e).__name__
    if isinstance(e, Image.DecompressionBombError):
        return f"{text}: Pillow refuses it as a possible decompression bomb; crop or downscale the image"
    return " ".join(text.split())


def _head(path: Path, label: str) -> bytes:
    """The first bytes of an image file (for messages), after the checks that it is a readable file."""
    if not path.exists():
        raise FileNotFoundError(f"image {path} does not exist")
    if path.is_dir():
        raise ImageError(label, "it is a folder, not an image file")
    try:
        with open(path, "rb") as f:
            return f.read(8)
    except OSError as e:
        raise ImageError(label, e.strerror or str(e)) from None


def _header_orientation(im: Image.Image) -> int:
    """The EXIF orientation known from the header (a PNG's ``getexif()`` would decode all its pixels)."""
    if im.format == "PNG":
        raw = im.info.get("exif")
        if not raw:
            return 1
        exif = Image.Exif()
        exif.load(raw if isinstance(raw, bytes) else bytes(raw))
        return int(exif.get(0x0112, 1))
    return int(im.getexif().get(0x0112, 1))


def _not_an_image(head: bytes) -> str:
    return (f"not an image file Pillow can read (it starts {head!r}); give a PNG, JPEG, TIFF, BMP, GIF or WebP "
            "file")


def _open(fp, label: str, head: bytes) -> Image.Image:
    try:
        with Image.open(fp) as im:
            return _decoded(im, label, first_frame=True)
    except UnidentifiedImageError:
        raise ImageError(label, _not_an_image(head)) from None
    except ImageError:
        raise
    except _DECODE_ERRORS as e:
        raise ImageError(label, f"{_reason(e)}") from None


def _decoded(im: Image.Image, label: str, first_frame: bool) -> Image.Image:
    """Load pixels (first frame), apply EXIF orientation, and record the integer range of an ``I`` image."""
    frames = getattr(im, "n_frames", 1) if first_frame else 1
    if frames > 1:
        im.seek(0)
        warnings.warn(f"{label} has {frames} frames; reading the first", MultiFrameWarning, stacklevel=4)
    bits = _int_bits(im) if im.mode == "I" else None
    im.load()
    out = ImageOps.exif_transpose(im) if im.getexif().get(0x0112, 1) != 1 else im
    if out is im and frames > 1:
        out = im.copy()  # detached from the file's later frames
    if bits is not None:
        out.info["dawnet_bits"] = bits
    return out


def _int_bits(im: Image.Image) -> int | None:
    """The bit depth an ``I`` file states (TIFF BitsPerSample, a PGM's 16-bit raw mode), or None."""
    tag = getattr(im, "tag_v2", None)
    if tag is not None and tag.get(258):
        bits = tag.get(258)
        bits = int(bits[0] if isinstance(bits, tuple) else bits)
        fmt = tag.get(339, 1)
        signed = (fmt[0] if isinstance(fmt, tuple) else fmt) == 2
        return bits - 1 if signed else bits  # a signed sample's range is one bit less
    for tile in getattr(im, "tile", None) or []:
        raw = tile.args if isinstance(tile.args, str) else (tile.args[0] if tile.args else "")
        if isinstance(raw, str) and raw.startswith("I;16"):
            return 16
    return None


def _from_array(a: np.ndarray, label: str) -> Image.Image:
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (2, 3, 4)):
        raise ImageError(label, f"an image array must be (H, W) or (H, W, C) with C in 1-4, "
                         f"got shape {a.shape}")
    if a.size == 0:
        raise ImageError(label, f"it is empty (shape {a.shape})")
    if a.ndim == 2:
        if a.dtype == np.bool_:
            return Image.fromarray(a.astype(np.uint8) * 255, mode="L")
        if a.dtype == np.uint8:
            return Image.fromarray(a, mode="L")
        if np.issubdtype(a.dtype, np.floating):
            return Image.fromarray(a.astype(np.float32), mode="F")
        if np.issubdtype(a.dtype, np.integer):
            bits = 16 if a.dtype in (np.uint16, np.int16) else (32 if a.dtype == np.uint32 else None)
            return Image.fromarray(_levels(a.astype(np.float32), bits, label), mode="L")
        raise ImageError(label, f"unsupported array dtype {a.dtype}")
    channels = {2: "LA", 3: "RGB", 4: "RGBA"}[a.shape[2]]
    if a.dtype == np.uint8:
        u8 = a
    elif np.issubdtype(a.dtype, np.floating):
        u8 = _float_levels(a, label)
    elif a.dtype == np.uint16:
        u8 = np.rint(a.astype(np.float32) * (255.0 / 65535.0)).astype(np.uint8)
    else:
        raise ImageError(label, f"a colour array must be uint8, uint16 or float, got {a.dtype}")
    return Image.fromarray(np.ascontiguousarray(u8), mode=channels)


def _levels(v: np.ndarray, bits: int | None, label: str) -> np.ndarray:
    """Integer grey values -> uint8 by the range ``bits`` states (or the smallest of 8/16/31 bits holding them)."""
    if bits is None:
        top = float(v.max()) if v.size else 0.0
        bits = 8 if top <= 255 else 16 if top <= 65535 else 31
    if bits == 32 and v.min() < 0:  # an unsigned 32-bit file Pillow decoded as signed
        v = np.where(v < 0, v + 2.0**32, v)
    scale = 255.0 / (2.0**bits - 1)
    return np.clip(np.rint(v * scale), 0, 255).astype(np.uint8)


def _float_levels(a: np.ndarray, label: str) -> np.ndarray:
    a = a.astype(np.float32)
    if np.isnan(a).any():
        raise ImageError(label, "it holds NaN values")
    finite = a[np.isfinite(a)]
    if finite.size and finite.min() >= 0.0 and finite.max() <= 1.0:
        a = a * 255.0
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _gray_u8(im: Image.Image, label: str) -> np.ndarray:
    """The grey channel of a single-channel image as uint8."""
    if im.mode in _SIXTEEN:
        return _levels(np.asarray(im).astype(np.float32), 16, label)
    if im.mode == "I":
        return _levels(np.asarray(im).astype(np.float32), im.info.get("dawnet_bits"), label)
    if im.mode == "F":
        return _float_levels(np.asarray(im), label)
    return np.asarray(im.convert("L"))


def _convert(im: Image.Image, mode: str, label: str) -> Image.Image:
    if im.mode == mode:
        return im
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    elif im.mode == "PA":
        im = im.convert("RGBA")
    elif im.mode in ("La", "RGBa"):
        im = im.convert("LA" if im.mode == "La" else "RGBA")
    if im.mode in ("LA", "RGBA"):
        return _over_white(im, mode)
    if im.mode in GRAY_MODES:
        g = Image.fromarray(_gray_u8(im, label), mode="L")
        return g if mode == "L" else g.convert("RGB")
    try:
        if mode == "L":
            return (im if im.mode in ("RGB", "CMYK", "YCbCr") else im.convert("RGB")).convert("L")
        return im.convert("RGB")
    except ValueError as e:
        raise ImageError(label, f"unsupported image mode {im.mode} ({_reason(e)})") from None


def _over_white(im: Image.Image, mode: str) -> Image.Image:
    """Composite an ``LA``/``RGBA`` image over white; light ink whose shape is only in alpha becomes black ink."""
    a = np.asarray(im)
    alpha = a[:, :, -1].astype(np.float32) / 255.0
    colour = a[:, :, :-1].astype(np.float32)
    luma = colour[:, :, 0] if colour.shape[2] == 1 else colour @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    visible = a[:, :, -1] > 0
    if visible.any() and alpha.min() < alpha.max():
        seen = luma[visible]
        if seen.max() - seen.min() <= 2.0 and seen.mean() >= 128.0:  # one light colour: the ink is the alpha
            colour = np.zeros_like(colour)
    out = colour * alpha[:, :, None] + 255.0 * (1.0 - alpha[:, :, None])
    u8 = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if u8.shape[2] == 1:
        g = Image.fromarray(u8[:, :, 0], mode="L")
        return g if mode == "L" else g.convert("RGB")
    rgb = Image.fromarray(u8, mode="RGB")
    return rgb if mode == "RGB" else rgb.convert("L")
