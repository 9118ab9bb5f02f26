"""ImageInput reads every image through dawnet.images: 16-bit, alpha-only ink and colour give the right tensor."""

import numpy as np
import pytest
import torch
from PIL import Image

from dawnet.inputs import ImageInput


@pytest.fixture()
def gray() -> np.ndarray:
    a = np.full((12, 20), 240, np.uint8)
    a[3:9, 2:18:2] = 15
    return a


def test_16_bit_and_alpha_ink_files_give_the_tensor_of_the_8_bit_original(gray, tmp_path):
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "l16.png")
    white = np.full_like(gray, 255)
    Image.fromarray(np.dstack([white, white, white, 255 - gray]), mode="RGBA").save(tmp_path / "alpha.png")
    expected = torch.from_numpy(gray.astype(np.float32) / 255.0)[None, None]
    for channels in (None, 1):
        convert = ImageInput(channels=channels)
        assert torch.equal(convert(tmp_path / "l16.png"), expected)
        assert torch.equal(convert(gray.astype(np.uint16) * 257), expected)
    assert torch.equal(ImageInput(channels=1)(tmp_path / "alpha.png"), expected)
    rgb = ImageInput()(tmp_path / "alpha.png")  # a colour file stays colour, alpha over white
    assert rgb.shape == (1, 3, 12, 20) and torch.equal(rgb, expected.expand(-1, 3, -1, -1))
    assert torch.equal(ImageInput(channels=3)(tmp_path / "l16.png"), expected.expand(-1, 3, -1, -1))


def test_rgba_arrays_are_composited_and_floats_are_taken_as_given(gray):
    z = np.zeros_like(gray)
    rgba = np.dstack([z, z, z, 255 - gray])  # black ink only in alpha: dropping alpha gave an all-black image
    assert torch.equal(ImageInput(channels=1)(rgba), torch.from_numpy(gray / np.float32(255.0))[None, None])
    f = np.linspace(0, 3, 20, dtype=np.float32)[None].repeat(12, 0)  # float arrays: already model values
    assert torch.equal(ImageInput()(f), torch.from_numpy(f)[None, None])
    with pytest.raises(ValueError, match=r"got shape \(12, 20, 5\)"):
        ImageInput()(np.zeros((12, 20, 5), np.uint8))
