"""The one image loader: every mode a scanner or an editor writes reads as the same 8-bit line."""

import warnings

import numpy as np
import pytest
import torch
from nets import TinyCRNN
from PIL import Image, ImageDraw, ImageFont

from dawnet.images import (
    ImageError,
    MultiFrameWarning,
    image_size,
    is_blank,
    load_image,
    to_gray,
    to_rgb,
)

FONT = "/usr/share/fonts/truetype/kristi/Kristi.ttf"  # a handwriting font the project installs


@pytest.fixture(scope="module")
def line() -> np.ndarray:
    """The 8-bit original: a real handwritten-looking line, antialiased dark ink on white paper."""
    font = ImageFont.truetype(FONT, 36)
    im = Image.new("L", (260, 56), 255)
    ImageDraw.Draw(im).text((6, 4), "Quick brown fox", font=font, fill=20)
    a = np.asarray(im)
    assert len(np.unique(a)) > 30  # antialiased: many grey levels, so scaling errors would show
    return a


def _saved(im: Image.Image, path, **kw):
    im.save(path, **kw)
    return path


def _gray_ramp_palette(im: Image.Image) -> Image.Image:
    im.putpalette([v for i in range(256) for v in (i, i, i)])
    return im


# each case: name -> (make the file from the original, max difference allowed)
def _sixteen_png(a, p):
    return _saved(Image.fromarray(a.astype(np.uint16) * 257), p / "l16.png")


def _sixteen_big_endian_pgm(a, p):  # Pillow decodes a 16-bit PGM to mode I with raw mode I;16B
    return _saved(Image.fromarray(a.astype(np.uint16) * 257), p / "l16.pgm")  # written as raw I;16B


def _sixteen_tiff(a, p):
    return _saved(Image.fromarray(a.astype(np.uint16) * 257), p / "l16.tif")


def _thirty_two_tiff(a, p):
    return _saved(Image.fromarray(a.astype(np.int32) * 8421504), p / "l32.tif")  # (2**31 - 1) // 255


def _float_unit_tiff(a, p):
    return _saved(Image.fromarray(a.astype(np.float32) / 255.0), p / "f01.tif")


def _float_levels_tiff(a, p):
    return _saved(Image.fromarray(a.astype(np.float32)), p / "f255.tif")


def _palette_png(a, p):
    return _saved(_gray_ramp_palette(Image.fromarray(a, mode="P")), p / "p.png")


def _palette_transparent_png(a, p):
    # the paper is palette entry 255, made transparent and coloured black: only compositing gives white paper
    im = _gray_ramp_palette(Image.fromarray(a, mode="P"))
    pal = im.getpalette()
    pal[765:768] = [0, 0, 0]
    im.putpalette(pal)
    return _saved(im, p / "pt.png", transparency=255)


def _gray_alpha_png(a, p):  # black ink whose shape is only in the alpha channel
    return _saved(Image.fromarray(np.dstack([np.zeros_like(a), 255 - a]), mode="LA"), p / "la.png")


def _rgba_opaque_png(a, p):
    return _saved(Image.fromarray(np.dstack([a, a, a, np.full_like(a, 255)]), mode="RGBA"), p / "rgba.png")


def _rgba_black_alpha_ink_png(a, p):  # transparent background, every colour channel black
    z = np.zeros_like(a)
    return _saved(Image.fromarray(np.dstack([z, z, z, 255 - a]), mode="RGBA"), p / "rgba-black.png")


def _rgba_white_alpha_ink_png(a, p):  # transparent background, every colour channel white: ink only in alpha
    w = np.full_like(a, 255)
    return _saved(Image.fromarray(np.dstack([w, w, w, 255 - a]), mode="RGBA"), p / "rgba-white.png")


def _rgba_transparent_paper_png(a, p):  # inked pixels opaque in their grey, paper transparent with junk colour
    junk = np.random.default_rng(0).integers(0, 256, a.shape + (3,), dtype=np.uint8)
    ink = a < 255
    rgb = np.where(ink[:, :, None], a[:, :, None], junk)
    return _saved(Image.fromarray(np.dstack([rgb, np.where(ink, 255, 0).astype(np.uint8)]), mode="RGBA"),
                  p / "rgba-paper.png")


def _cmyk_tiff(a, p):
    return _saved(Image.fromarray(a).convert("CMYK"), p / "cmyk.tif")


def _rgb_png(a, p):
    return _saved(Image.fromarray(a).convert("RGB"), p / "rgb.png")


CASES = {
    "I;16 png": (_sixteen_png, 0),
    "I;16B pgm": (_sixteen_big_endian_pgm, 0),
    "I;16 tiff": (_sixteen_tiff, 0),
    "I 32-bit tiff": (_thirty_two_tiff, 0),
    "F 0-1 tiff": (_float_unit_tiff, 0),
    "F 0-255 tiff": (_float_levels_tiff, 0),
    "P png": (_palette_png, 0),
    "P transparent png": (_palette_transparent_png, 0),
    "LA alpha ink": (_gray_alpha_png, 0),
    "RGBA opaque": (_rgba_opaque_png, 0),
    "RGBA black alpha ink": (_rgba_black_alpha_ink_png, 0),
    "RGBA white alpha ink": (_rgba_white_alpha_ink_png, 0),
    "RGBA transparent paper": (_rgba_transparent_paper_png, 0),
    "CMYK tiff": (_cmyk_tiff, 0),
    "RGB png": (_rgb_png, 0),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_mode_reads_as_the_8_bit_original(case, line, tmp_path):
    make, tolerance = CASES[case]
    path = make(line, tmp_path)
    got = load_image(path)
    assert got.mode == "L" and got.size == (line.shape[1], line.shape[0])
    diff = np.abs(np.asarray(got).astype(int) - line.astype(int))
    assert diff.max() <= tolerance, case
    assert not is_blank(got)
    # the same pixels from bytes, from the opened image and as RGB
    assert np.array_equal(np.asarray(load_image(path.read_bytes())), np.asarray(got))
    with Image.open(path) as opened:
        assert np.array_equal(np.asarray(to_gray(opened)), np.asarray(got))
    assert np.array_equal(np.asarray(load_image(path, mode="RGB"))[:, :, 1], np.asarray(got))


def test_a_16_bit_scan_is_not_clipped_to_white_as_convert_L_does(line, tmp_path):
    path = _sixteen_png(line, tmp_path)
    with Image.open(path) as im:
        assert im.mode == "I;16"
        assert is_blank(im.convert("L"))  # the bug this loader exists for
    assert np.array_equal(np.asarray(load_image(path)), line)


def test_16_bit_values_scale_by_the_format_range_not_the_image_range(tmp_path):
    a = np.array([[0, 257, 32768, 65535]], dtype=np.uint16)  # a faint image stays faint
    assert np.asarray(load_image(Image.fromarray(a))).tolist() == [[0, 1, 128, 255]]
    assert np.asarray(load_image(Image.fromarray(a.astype(">u2")))).tolist() == [[0, 1, 128, 255]]
    assert np.asarray(load_image(a)).tolist() == [[0, 1, 128, 255]]


def test_int_images_without_a_stated_depth_use_the_smallest_range_that_holds_them():
    assert np.asarray(load_image(Image.fromarray(np.array([[0, 128, 255]], np.int32)))).tolist() == [[0, 128, 255]]
    assert np.asarray(load_image(Image.fromarray(np.array([[0, 65535]], np.int32)))).tolist() == [[0, 255]]
    assert np.asarray(load_image(Image.fromarray(np.array([[-5, 2**31 - 1]], np.int32)))).tolist() == [[0, 255]]


def test_float_images_in_0_1_and_in_0_255():
    assert np.asarray(load_image(np.array([[0.0, 0.5, 1.0]], np.float32))).tolist() == [[0, 128, 255]]
    assert np.asarray(load_image(np.array([[0.0, 2.0, 255.0, 300.0]], np.float32))).tolist() == [[0, 2, 255, 255]]
    with pytest.raises(ImageError, match="the image array: it holds NaN values"):
        load_image(np.array([[0.0, np.nan]], np.float32))


def test_bilevel_image(line, tmp_path):
    binary = line < 128
    path = _saved(Image.fromarray(~binary), tmp_path / "bw.png")
    with Image.open(path) as im:
        assert im.mode == "1"
    assert np.array_equal(np.asarray(load_image(path)), np.where(binary, 0, 255))


def test_rgba_over_white_and_light_ink_in_alpha_reads_black():
    px = np.array([[[255, 0, 0, 255], [0, 0, 255, 0], [10, 10, 10, 128]]], np.uint8)  # red, clear, half grey
    gray = np.asarray(load_image(px))
    assert gray.tolist() == [[76, 255, round(10 * 128 / 255 + 255 * 127 / 255)]]
    assert np.asarray(to_rgb(px)).tolist()[0][:2] == [[255, 0, 0], [255, 255, 255]]
    white_ink = np.array([[[255, 255, 255, 0], [255, 255, 255, 255], [255, 255, 255, 51]]], np.uint8)
    assert np.asarray(load_image(white_ink)).tolist() == [[255, 0, 204]]
    opaque_white = np.full((2, 2, 4), 255, np.uint8)  # a plain white image stays white
    assert np.asarray(load_image(opaque_white)).tolist() == [[255, 255], [255, 255]]


def test_palette_with_alpha_pa(line):
    im = _gray_ramp_palette(Image.fromarray(np.zeros_like(line), mode="P")).convert("PA")
    im.putalpha(Image.fromarray(255 - line))
    assert im.mode == "PA"
    assert np.array_equal(np.asarray(load_image(im)), line)


_INVERSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
            5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
            8: Image.Transpose.ROTATE_270}


@pytest.mark.parametrize("orientation", sorted(_INVERSE))
def test_exif_orientation_is_applied(orientation, line, tmp_path):
    stored = Image.fromarray(line).transpose(_INVERSE[orientation])
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = _saved(stored, tmp_path / f"o{orientation}.png", exif=exif)
    assert image_size(path) == (line.shape[1], line.shape[0])
    assert np.array_equal(np.asarray(load_image(path)), line)


def test_multi_frame_reads_the_first_frame_with_a_warning(line, tmp_path):
    first, second = Image.fromarray(line), Image.fromarray(255 - line)
    for name in ("pages.tif", "anim.gif"):
        path = tmp_path / name
        first.save(path, save_all=True, append_images=[second])
        with pytest.warns(MultiFrameWarning, match=rf"{name} has 2 frames; reading the first"):
            got = load_image(path)
        assert np.array_equal(np.asarray(got), line), name


def test_a_single_frame_gives_no_warning(line, tmp_path):
    path = _saved(Image.fromarray(line), tmp_path / "one.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert np.array_equal(np.asarray(load_image(path)), line)


def test_bad_inputs_get_one_line_errors_naming_the_file(line, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image .*missing\.png does not exist"):
        load_image(tmp_path / "missing.png")
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    with pytest.raises(ImageError, match=r"^cannot read image .*junk\.png: not an image file Pillow can read "
                                         r"\(it starts b'not an i'\)"):
        load_image(junk)
    whole = _saved(Image.fromarray(line), tmp_path / "whole.png").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ImageError, match=r"^cannot read image .*cut\.png: .*truncated") as e:
        load_image(cut)
    assert "\n" not in str(e.value)
    with pytest.raises(ImageError, match=r"^cannot read image .*: it is a folder"):
        load_image(tmp_path)
    with pytest.raises(ImageError, match=r"^cannot read image line\[7\]: not an image file"):
        load_image(b"\x00" * 20, name="line[7]")
    with pytest.raises(ImageError, match="the image bytes: it is empty"):
        load_image(b"")
    with pytest.raises(ImageError, match=r"shape \(4, 4, 5\)"):
        load_image(np.zeros((4, 4, 5), np.uint8))
    with pytest.raises(TypeError, match="cannot read an image from int"):
        load_image(3)
    with pytest.raises(ValueError, match="mode must be 'L', 'RGB', 'auto' or None"):
        load_image(junk, mode="I")


def test_decompression_bombs_stay_refused(tmp_path, monkeypatch):
    path = _saved(Image.new("L", (100, 100), 255), tmp_path / "big.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 10,000 px is over twice the limit
    with pytest.raises(ImageError, match=r"^cannot read image .*big\.png: .*decompression bomb; crop or downscale"):
        load_image(path)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(path.read_bytes())


def test_mode_none_keeps_the_decoded_mode(line, tmp_path):
    im = load_image(_rgb_png(line, tmp_path), mode=None)
    assert im.mode == "RGB"
    im16 = load_image(_sixteen_png(line, tmp_path), mode=None)
    assert im16.mode == "I;16" and np.array_equal(np.asarray(to_gray(im16)), line)


def test_is_blank():
    assert is_blank(Image.new("L", (10, 10), 255))
    assert is_blank(np.full((4, 4), 17, np.uint8))
    a = np.full((4, 4), 250, np.uint8)
    a[1, 1] = 242
    assert is_blank(a) and not is_blank(a, tolerance=7)
    a[2, 2] = 20
    assert not is_blank(a)


def _greedy(logits: torch.Tensor) -> list[int]:
    best = logits.argmax(-1)[0].tolist()
    return [c for i, c in enumerate(best) if c != 0 and (i == 0 or c != best[i - 1])]


@pytest.mark.parametrize("case", ["I;16 png", "LA alpha ink", "RGBA white alpha ink", "P transparent png",
                                  "F 0-1 tiff", "CMYK tiff"])
def test_a_recognizer_reads_each_mode_as_it_reads_the_original(case, line, tmp_path):
    from dawnet.ocr.agents import prepare_line

    path = CASES[case][0](line, tmp_path)
    x_original, _ = prepare_line(Image.fromarray(line), 32)
    x, _ = prepare_line(path, 32)
    assert torch.equal(x, x_original)
    torch.manual_seed(0)
    net = TinyCRNN(classes=12, height=32, channels=(8, 16), hidden=8).eval()
    with torch.no_grad():
        assert _greedy(net(x)) == _greedy(net(x_original))
        assert torch.equal(net(x), net(x_original))


def test_pil_input_passes_through_without_copy_when_already_gray(line):
    im = Image.fromarray(line)
    assert load_image(im) is im


def test_image_size_reads_the_header_only(line, tmp_path, monkeypatch):
    path = _saved(Image.fromarray(line), tmp_path / "l.png")

    def no_decoding(self):
        raise AssertionError("image_size decoded the pixels")

    monkeypatch.setattr("PIL.ImageFile.ImageFile.load", no_decoding)
    assert image_size(path) == (line.shape[1], line.shape[0])
    assert image_size(path.read_bytes()) == (line.shape[1], line.shape[0])
    with pytest.raises(ImageError, match=r"^cannot read image x\.png: not an image file"):
        image_size(b"nonsense", name="x.png")
    with pytest.raises(FileNotFoundError, match=r"image .*gone\.png does not exist"):
        image_size(tmp_path / "gone.png")
    with pytest.raises(ImageError, match=r"^cannot read image .*: it is a folder, not an image file$"):
        image_size(tmp_path)


def test_a_damaged_file_opened_lazily_by_the_caller_is_an_image_error(line, tmp_path):
    whole = _saved(Image.fromarray(line), tmp_path / "whole.png").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(whole[: len(whole) // 2])
    with Image.open(cut) as im, pytest.raises(ImageError, match=r"^cannot read image the image: .*truncated"):
        load_image(im)
