"""Per-op reference counts: one tiny module per op, the expected count written as a formula of its dims.

MACs are exact (one right answer); element-wise terms follow the constants in dawnet.cost.handles.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from dawnet.cost import count


def _out(size, k, s=1, p=0, d=1):
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


class Fn(nn.Module):
    """Wraps a function of the inputs, so functional ops run inside a module."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, *xs):
        return self.fn(*xs)


# -- convolution -------------------------------------------------------------------------------

CONV_CASES = [
    # (dims, cin, cout, k, stride, pad, dilation, groups, spatial)
    (1, 4, 6, 3, 1, 0, 1, 1, (17,)),
    (2, 4, 6, 3, 1, 1, 1, 1, (9, 11)),
    (2, 4, 8, 3, 2, 1, 1, 2, (9, 11)),   # grouped, strided
    (2, 6, 6, 3, 1, 1, 1, 6, (8, 8)),    # depthwise
    (2, 4, 6, 3, 1, 2, 2, 1, (10, 10)),  # dilated
    (3, 2, 4, 3, 1, 1, 1, 1, (5, 6, 7)),
]


@pytest.mark.parametrize("dims,cin,cout,k,s,p,d,g,spatial", CONV_CASES)
def test_conv(dims, cin, cout, k, s, p, d, g, spatial):
    conv = [nn.Conv1d, nn.Conv2d, nn.Conv3d][dims - 1](cin, cout, k, stride=s, padding=p, dilation=d, groups=g)
    n = 2
    out = [_out(x, k, s, p, d) for x in spatial]
    r = count(conv, torch.randn(n, cin, *spatial), elementwise=True)
    # every output element is a dot product over Cin/g x k^dims inputs
    macs = n * cout * (cin // g) * k**dims * torch.tensor(out).prod().item()
    assert r.macs == macs
    assert r.flops == 2 * macs + n * cout * torch.tensor(out).prod().item()  # + one bias add per output


@pytest.mark.parametrize("dims,spatial,out_pad", [(1, (7,), 0), (2, (5, 6), 1), (3, (3, 4, 5), 0)])
def test_conv_transpose(dims, spatial, out_pad):
    cin, cout, k, g, n = 4, 6, 3, 2, 2
    conv = [nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d][dims - 1](
        cin, cout, k, stride=2, groups=g, output_padding=out_pad, bias=False)
    r = count(conv, torch.randn(n, cin, *spatial))
    # every *input* element is scattered into Cout/g x k^dims outputs (not out-spatial x ..., the 4x bug)
    assert r.macs == n * cin * (cout // g) * k**dims * int(torch.tensor(spatial).prod())


# -- linear and the matmul family ---------------------------------------------------------------


@pytest.mark.parametrize("shape", [(5, 8), (3, 7, 8), (2, 3, 4, 8)])
def test_linear_any_rank(shape):
    r = count(nn.Linear(8, 6), torch.randn(*shape), elementwise=True)
    rows = int(torch.tensor(shape[:-1]).prod())
    assert r.macs == rows * 8 * 6
    assert r.flops == 2 * rows * 8 * 6 + rows * 6  # + bias


def test_matmul_family():
    a, b = torch.randn(3, 4, 5), torch.randn(3, 5, 6)
    assert count(Fn(torch.bmm), a, b).macs == 3 * 4 * 5 * 6
    assert count(Fn(lambda x, y: x @ y), a, b).macs == 3 * 4 * 5 * 6
    assert count(Fn(lambda x, y: x @ y), a, torch.randn(5, 6)).macs == 3 * 4 * 5 * 6  # broadcast
    assert count(Fn(lambda x, y: torch.einsum("bik,bkj->bij", x, y)), a, b).macs == 3 * 4 * 5 * 6
    assert count(Fn(torch.mm), a[0], b[0]).macs == 4 * 5 * 6
    assert count(Fn(torch.matmul), torch.randn(5), torch.randn(5)).macs == 5
    assert count(Fn(torch.mv), a[0], torch.randn(5)).macs == 4 * 5
    c = torch.randn(3, 4, 6)
    r = count(Fn(torch.baddbmm), c, a, b, elementwise=True)
    assert (r.macs, r.elementwise_flops) == (3 * 4 * 5 * 6, 3 * 4 * 6)


def test_einsum_contraction_over_two_indices():
    x, y = torch.randn(2, 3, 4, 5), torch.randn(4, 5, 7)
    r = count(Fn(lambda a, b: torch.einsum("nchw,hwk->nck", a, b)), x, y)
    assert r.macs == 2 * 3 * (4 * 5) * 7


# -- normalization, pooling, interpolation (element-wise terms) ---------------------------------


def test_batch_norm_eval_and_train():
    x = torch.randn(2, 2, 2, 2)  # 16 elements
    bn = nn.BatchNorm2d(2).eval()
    assert count(bn, x, elementwise=True).elementwise_flops == 16 * (2 + 2)  # normalize + affine
    train = count(bn.train(), x, elementwise=True)
    assert train.elementwise_flops == 16 * (2 + 2 + 2) + 1  # + batch stats; + num_batches_tracked += 1
    bn_plain = nn.BatchNorm2d(2, affine=False).eval()
    assert count(bn_plain, x, elementwise=True).elementwise_flops == 16 * 2
    assert count(bn, x).flops == 0  # no MACs, element-wise off by default


def test_layer_group_instance_norm():
    x = torch.randn(2, 4, 3, 3)  # 72 elements
    assert count(nn.LayerNorm([4, 3, 3]), x, elementwise=True).elementwise_flops == 72 * 6
    assert count(nn.GroupNorm(2, 4), x, elementwise=True).elementwise_flops == 72 * 6
    assert count(nn.InstanceNorm2d(4), x, elementwise=True).elementwise_flops == 72 * 4  # stats + normalize


def test_pooling():
    x = torch.randn(2, 3, 8, 10)
    assert count(nn.MaxPool2d(2), x, elementwise=True).elementwise_flops == 2 * 3 * 4 * 5 * 4
    assert count(nn.AvgPool2d(3, stride=2), x, elementwise=True).elementwise_flops == 2 * 3 * 3 * 4 * 9
    assert count(nn.MaxPool2d((2, 1)), x, elementwise=True).elementwise_flops == 2 * 3 * 4 * 10 * 2


def test_adaptive_pooling_uses_real_windows():
    x = torch.randn(2, 3, 5, 7)
    # 5 -> 2: windows [0,3) [2,5) = 6 rows; 7 -> 3: windows [0,3) [2,5) [4,7) = 9 columns
    for pool in (nn.AdaptiveAvgPool2d((2, 3)), nn.AdaptiveMaxPool2d((2, 3))):
        assert count(pool, x, elementwise=True).elementwise_flops == 2 * 3 * 6 * 9
    # global pooling reads every element once
    assert count(nn.AdaptiveAvgPool2d(1), x, elementwise=True).elementwise_flops == 2 * 3 * 5 * 7


def test_interpolate():
    x = torch.randn(1, 2, 4, 5)
    bilinear = Fn(lambda t: F.interpolate(t, scale_factor=2, mode="bilinear"))
    assert count(bilinear, x, elementwise=True).elementwise_flops == 1 * 2 * 8 * 10 * 4 * 2  # 4 taps x (mul+add)
    nearest = Fn(lambda t: F.interpolate(t, scale_factor=2))
    r = count(nearest, x, elementwise=True)
    assert r.elementwise_flops == 0 and not r.unknown_ops  # a copy, known to be free


def test_activations_and_softmax():
    x = torch.randn(4, 10)
    for act in (nn.ReLU(), nn.GELU(), nn.SiLU(), nn.Sigmoid(), nn.Tanh(), nn.Hardswish(), nn.LeakyReLU()):
        r = count(act, x, elementwise=True)
        assert (r.macs, r.elementwise_flops, r.unknown_ops) == (0, 40, {}), type(act).__name__
    assert count(nn.Softmax(-1), x, elementwise=True).elementwise_flops == 3 * 40


# -- attention ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["plain", "causal", "bool_mask", "float_mask"])
def test_sdpa(variant):
    B, H, L, S, E, Ev = 2, 4, 6, 7, 8, 8  # the CPU flash kernel needs Ev == E
    q, k, v = torch.randn(B, H, L, E), torch.randn(B, H, S, E), torch.randn(B, H, S, Ev)
    kw = {"causal": {"is_causal": True}, "bool_mask": {"attn_mask": torch.ones(L, S, dtype=torch.bool).tril()},
          "float_mask": {"attn_mask": torch.zeros(L, S)}, "plain": {}}[variant]
    model = Fn(lambda a, b, c: F.scaled_dot_product_attention(a, b, c, **kw))
    fused = count(model, q, k, v, elementwise=True)
    assert "_scaled_dot_product_flash_attention_for_cpu" in fused.by_operator  # the fused CPU kernel ran
    assert fused.macs == B * H * (L * S * E + L * S * Ev)  # Q K^T and P V, dense even when causal
    with sdpa_kernel(SDPBackend.MATH):
        math = count(model, q, k, v, elementwise=True)
    assert "bmm" in math.by_operator
    assert (math.macs, math.elementwise_flops) == (fused.macs, fused.elementwise_flops)


def test_sdpa_value_dim_differs():
    B, H, L, S, E, Ev = 2, 3, 4, 9, 8, 5
    q, k, v = torch.randn(B, H, L, E), torch.randn(B, H, S, E), torch.randn(B, H, S, Ev)
    r = count(Fn(F.scaled_dot_product_attention), q, k, v)
    assert r.macs == B * H * (L * S * E + L * S * Ev)


def _mha_macs(B, L, S, D):
    # q, k, v and out projections + Q K^T and P V over all heads (H x L x S x D/H each)
    return B * L * D * D + 2 * B * S * D * D + B * L * D * D + 2 * B * L * S * D


@pytest.mark.parametrize("need_weights", [True, False])
def test_multihead_attention_train_and_fast_path(need_weights):
    B, L, D = 2, 5, 16
    mha = nn.MultiheadAttention(D, 4, batch_first=True)
    x = torch.randn(B, L, D)
    train = count(mha, x, x, x, need_weights=need_weights, elementwise=True)
    mha.eval()
    with torch.no_grad():
        fast = count(mha, x, x, x, need_weights=need_weights, elementwise=True)
    assert "_native_multi_head_attention" in fast.by_operator
    assert train.macs == fast.macs == _mha_macs(B, L, L, D)
    assert train.elementwise_flops == fast.elementwise_flops
    assert mha.training is False


def test_cross_attention_lengths():
    B, L, S, D = 2, 3, 7, 8
    mha = nn.MultiheadAttention(D, 2, batch_first=True)
    q, kv = torch.randn(B, L, D), torch.randn(B, S, D)
    assert count(mha, q, kv, kv).macs == _mha_macs(B, L, S, D)
    with torch.no_grad():
        assert count(mha.eval(), q, kv, kv).macs == _mha_macs(B, L, S, D)


def test_transformer_encoder_layer_train_and_fast_path():
    B, L, D, F_ = 2, 5, 16, 32
    layer = nn.TransformerEncoderLayer(D, 4, F_, batch_first=True, dropout=0.0)
    x = torch.randn(B, L, D)
    truth = _mha_macs(B, L, L, D) + 2 * B * L * D * F_  # attention + two FFN linears
    train = count(layer, x, elementwise=True)
    layer.eval()
    with torch.no_grad():
        fast = count(layer, x, elementwise=True)
    assert "_transformer_encoder_layer_fwd" in fast.by_operator
    assert train.macs == fast.macs == truth
    assert train.elementwise_flops == fast.elementwise_flops


def test_transformer_encoder_padding_mask_counts_real_tokens():
    D, F_ = 16, 32
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(D, 4, F_, batch_first=True), 2,
                                enable_nested_tensor=True).eval()
    x = torch.randn(2, 5, D)
    pad = torch.zeros(2, 5, dtype=torch.bool)
    pad[1, 3:] = True  # lengths 5 and 3: the fast path packs them into a nested tensor
    with torch.no_grad(), pytest.warns(UserWarning, match="nested"):
        r = count(enc, x, src_key_padding_mask=pad)
    lengths = [5, 3]
    rows = sum(lengths)
    per_layer = 4 * rows * D * D + 2 * sum(n * n for n in lengths) * D + 2 * rows * D * F_
    assert r.macs == 2 * per_layer
    assert not r.unknown_ops


@pytest.mark.skipif(not hasattr(torch.Tag, "inplace"), reason="this torch has no Tag.inplace to compare with")
def test_inplace_rule_for_older_torch_matches_the_tag():
    """torch < 2.13 has no Tag.inplace; the name rule used there must agree with the tag on every pointwise op."""
    from dawnet.cost.handles import inplace_by_name

    checked = 0
    for name in dir(torch.ops.aten):
        packet = getattr(torch.ops.aten, name, None)
        for overload in getattr(packet, "overloads", lambda: [])():
            func = getattr(packet, overload)
            if torch.Tag.pointwise in func.tags:
                checked += 1
                assert inplace_by_name(func._schema.name) == (torch.Tag.inplace in func.tags), func._schema.name
    assert checked > 300


def test_untagged_pointwise_names_are_real_ops():
    """The fallback list for older torch releases must name ops that exist (a typo would count nothing)."""
    from dawnet.cost.handles import UNTAGGED_POINTWISE

    for name in UNTAGGED_POINTWISE:
        assert hasattr(torch.ops.aten, name.split("::")[1]), name


def test_scatter_is_a_copy_unless_it_reduces():
    class Scatter(nn.Module):
        def __init__(self, reduce=None):
            super().__init__()
            self.reduce = reduce

        def forward(self, x, index, src):
            if self.reduce is None:
                return x.scatter(1, index, src)
            return x.scatter(1, index, 2.0, reduce=self.reduce)  # the tensor-src form is deprecated

    x, index, src = torch.zeros(3, 8), torch.randint(0, 8, (3, 5)), torch.randn(3, 5)
    plain = count(Scatter(), x, index, src, elementwise=True)
    assert (plain.elementwise_flops, plain.unknown_ops) == (0, {})
    added = count(Scatter("multiply"), x, index, src, elementwise=True)
    assert (added.elementwise_flops, added.unknown_ops) == (15, {})
