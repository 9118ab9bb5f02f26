"""Robustness transforms: sizes kept, values kept in range, Lucid's composition, fusion == one by one."""

import pytest
import torch

from dawnet.diagnose.optvis import transform as T


def _gen(seed):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("shape", [(1, 3, 128, 128), (2, 1, 32, 200), (1, 5, 37, 23)])
def test_standard_transforms_keep_size_and_value_range(shape):
    torch.manual_seed(0)
    x = torch.rand(shape)
    st = T.standard_transforms()
    seen = set()
    for seed in range(20):
        y = st(x, _gen(seed))
        assert y.shape == x.shape
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        seen.add(round(float((y - x).abs().mean()), 5))
    assert len(seen) > 10  # it is random


def test_standard_transforms_are_lucids():
    st = T.standard_transforms()
    assert [type(t) for t in st.transforms] == [T.Pad, T.Jitter, T.RandomScale, T.RandomRotate, T.Jitter]
    pad, j8, sc, rot, j4 = st.transforms
    assert (pad.p, pad.fill, j8.d, j4.d) == (12, 0.5, 8, 4)
    assert (
        min(sc.scales) == pytest.approx(0.9) and max(sc.scales) == pytest.approx(1.1) and len(sc.scales) == 11
    )
    assert min(rot.angles) == -10 and max(rot.angles) == 10 and rot.angles.count(0) == 6
    # each part can be configured or left out
    assert len(T.standard_transforms(scales=None, angles=None).transforms) == 3


def test_each_geometric_transform_alone():
    x = torch.rand(2, 3, 20, 30)
    assert T.pad(3)(x).shape == (2, 3, 26, 36)
    assert torch.all(T.pad(3, value=0.25)(x)[..., 0, :] == 0.25)
    assert T.jitter(4)(x, _gen(0)).shape == (2, 3, 16, 26)
    for t in (T.random_scale(), T.random_rotate(), T.random_scale({"low": 0.5, "high": 2.0})):
        y = t(x, _gen(1))
        assert y.shape == x.shape and 0 <= float(y.min()) and float(y.max()) <= 1
    assert torch.equal(T.random_rotate([0])(x), x)
    assert torch.allclose(T.random_scale([1.0])(x), x, atol=1e-6)


def test_jitter_is_an_exact_integer_shift():
    x = torch.rand(1, 2, 16, 16)
    y = T.compose([T.jitter(4)], keep_size=False)(x, _gen(5))
    oy, ox = torch.randint(5, (2,), generator=_gen(5)).tolist()
    assert torch.equal(y, x[..., oy : oy + 12, ox : ox + 12])


@pytest.mark.parametrize("middle", [[T.random_scale()], [T.random_rotate()], []])
def test_fused_equals_one_by_one(middle):
    """One fused resampling gives what applying pad, jitter, scale/rotate, jitter, crop one by one gives."""
    torch.manual_seed(1)
    x = torch.rand(2, 3, 41, 57, dtype=torch.float64)
    ts = [T.pad(12), T.jitter(8), *middle, T.jitter(4)]
    for seed in range(6):
        fused = T.compose(ts)(x, _gen(seed))
        slow = T.compose(ts, fuse=False)(x, _gen(seed))
        assert fused.shape == slow.shape == x.shape
        torch.testing.assert_close(fused, slow, atol=1e-9, rtol=0)


def test_scale_then_rotate_fused_is_close_to_one_by_one():
    # two resamplings blur a little more than one: close, not equal
    x = torch.rand(1, 1, 64, 64).cumsum(-1).cumsum(-2)
    x = x / x.max()
    a = T.standard_transforms()(x, _gen(3))
    b = T.Compose(T.standard_transforms().transforms, fuse=False)(x, _gen(3))
    assert (a - b).abs().mean() < 0.01


def test_transforms_are_differentiable_and_deterministic():
    x = torch.rand(1, 3, 24, 24, requires_grad=True)
    st = T.standard_transforms()
    y = st(x, _gen(7))
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert torch.equal(st(x, _gen(7)), y.detach())


def test_plain_callables_compose_and_bad_input():
    x = torch.rand(1, 1, 10, 10)
    y = T.compose([T.pad(2), lambda t: t * 0 + 0.3, T.jitter(2)])(x, _gen(0))
    assert y.shape == x.shape and torch.allclose(y, torch.full_like(y, 0.3))
    with pytest.raises(ValueError, match="jitter"):
        T.jitter(12)(x)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        T.standard_transforms()(torch.rand(3, 10, 10))
    with pytest.raises(TypeError):
        T.random_scale(1.1)
