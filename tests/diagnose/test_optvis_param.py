"""Image parameterizations: exact sizes, channels, value range, FFT round trip, init from real images."""

import numpy as np
import pytest
import torch
from PIL import Image

from dawnet.diagnose.optvis import param as P


@pytest.mark.parametrize("h,w", [(32, 32), (33, 47), (16, 101), (1, 7)])
@pytest.mark.parametrize("channels", [1, 3, 5])
@pytest.mark.parametrize("fft", [True, False])
def test_any_size_and_channels_kept_exactly(h, w, channels, fft):
    p = P.image(h, w, batch=2, channels=channels, fft=fft)
    x = p().detach()
    assert x.shape == (2, channels, h, w)
    assert float(x.min()) >= 0 and float(x.max()) <= 1
    assert p.decorrelate == (channels == 3)


@pytest.mark.parametrize("h,w", [(32, 32), (31, 45), (20, 9)])
def test_fft_round_trip(h, w):
    """rfft2 -> scale^-1 -> (parameters) -> scale -> irfft2 gives back the image at exactly h x w."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, h, w)
    for decorrelate in (True, False):
        p = P.FFTImage((2, 3, h, w), decorrelate=decorrelate, valid="clamp")
        p.set_image(x)
        torch.testing.assert_close(p(), x, atol=1e-5, rtol=0)
        raw = p.raw().detach()
        # and the spectrum really is the scaled rfft of the raw image
        spec = torch.fft.rfft2(raw.double() * 4.0) / p.scale.double()
        torch.testing.assert_close(
            torch.view_as_real(spec).float(), p.spectrum.detach(), atol=1e-4, rtol=1e-4
        )


def test_fft_scaling_damps_high_frequencies():
    """With 1/f scaling, equal-size noise in the spectrum gives an image dominated by low frequencies."""
    torch.manual_seed(0)
    raw = P.FFTImage((1, 1, 64, 64), sd=1.0).raw().detach()[0, 0]
    power = torch.fft.rfft2(raw).abs() ** 2
    f = P.rfft2d_freqs(64, 64)
    assert power[(f > 0) & (f < 0.1)].mean() > 20 * power[f > 0.4].mean()


def test_sigmoid_init_from_image_and_pil():
    rgb = (np.random.default_rng(0).random((24, 30, 3)) * 255).astype(np.uint8)
    p = P.image(24, 30, init=Image.fromarray(rgb))
    expected = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    torch.testing.assert_close(p(), expected.clamp(1e-3, 1 - 1e-3), atol=1e-4, rtol=0)
    grey = Image.fromarray(rgb[..., 0])
    g = P.image(24, 30, channels=1, fft=False, init=grey)
    torch.testing.assert_close(
        g()[0, 0], (torch.from_numpy(rgb[..., 0]).float() / 255).clamp(1e-3, 1 - 1e-3), atol=1e-4, rtol=0
    )


def test_decorrelation_is_lucids_matrix_and_invertible():
    m = P.COLOR_CORRELATION_SVD_SQRT
    normalized = m / m.norm(dim=0).max()
    x = torch.randn(1, 3, 4, 5, dtype=torch.float64)
    torch.testing.assert_close(P.decorrelate_color(x)[0, :, 1, 2], normalized @ x[0, :, 1, 2])
    torch.testing.assert_close(P.correlate_color_inverse(P.decorrelate_color(x)), x)


def test_clamp_passes_gradient_straight_through():
    p = P.image(8, 8, channels=1, fft=False, valid="clamp")
    with torch.no_grad():
        p.pixels.fill_(2.0)  # saturated
    p().sum().backward()
    assert torch.all(p.pixels.grad == 1)
    assert float(p().detach().max()) == 1.0


def test_no_resize_size_mismatch_is_an_error():
    p = P.image(16, 16, channels=1)
    with pytest.raises(ValueError, match="never resizes"):
        p.set_image(torch.rand(1, 1, 16, 20))
    with pytest.raises(ValueError, match="decorrelat"):
        P.image(8, channels=1, decorrelate=True)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        P.to_tensor_image(torch.full((1, 8, 8), 3.0))
    with pytest.raises(ValueError, match="channels"):
        P.to_tensor_image(torch.rand(4, 8, 8), channels=3)


def test_seeded_generator_is_deterministic_and_dtype_device():
    a = P.image(12, 14, generator=torch.Generator().manual_seed(3))()
    b = P.image(12, 14, generator=torch.Generator().manual_seed(3))()
    c = P.image(12, 14, generator=torch.Generator().manual_seed(4))()
    assert torch.equal(a, b) and not torch.equal(a, c)
    d = P.image(12, 14, dtype=torch.float64)
    assert d().dtype == torch.float64
