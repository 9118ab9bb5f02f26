"""Recurrent layers: every variant against the gate-product formula, on every path PyTorch takes.

MACs of one layer direction = rows x (prod W_ih + prod W_hh [+ prod W_hr]), rows = real time steps x
sequences. LSTM has 4 gates, GRU 3, RNN 1.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from dawnet.cost import count
from dawnet.cost.handles import (
    HANDLES,
    attention_backward_macs,
    attention_macs,
    cudnn_rnn_cost,
    rnn_cell_elementwise,
)

pytestmark = pytest.mark.filterwarnings("ignore:TF32 acceleration", "ignore:LSTM with projections")

GATES = {nn.LSTM: 4, nn.GRU: 3, nn.RNN: 1}


def rnn_macs(cls, I, H, rows, layers=1, dirs=1, proj=0):
    """Hand formula: per layer and direction, rows x G*H x (in + out) [+ rows x H x P projection]."""
    G, out = GATES[cls], proj or H
    total = 0
    for layer in range(layers):
        inp = I if layer == 0 else out * dirs
        total += dirs * rows * (G * H * inp + G * H * out + (H * proj if proj else 0))
    return total


VARIANTS = [
    # (cls, kwargs)
    (nn.LSTM, {}),
    (nn.LSTM, {"num_layers": 2, "bidirectional": True}),
    (nn.LSTM, {"batch_first": True}),
    (nn.LSTM, {"proj_size": 5}),
    (nn.LSTM, {"proj_size": 5, "num_layers": 2, "bidirectional": True, "batch_first": True}),
    (nn.LSTM, {"bias": False}),
    (nn.GRU, {}),
    (nn.GRU, {"num_layers": 2, "bidirectional": True, "batch_first": True}),
    (nn.RNN, {}),
    (nn.RNN, {"nonlinearity": "relu", "num_layers": 3, "bidirectional": True}),
]


@pytest.mark.parametrize("cls,kw", VARIANTS, ids=lambda v: str(v) if not isinstance(v, type) else v.__name__)
@pytest.mark.parametrize("path", ["grad", "no_grad", "eval_no_grad", "no_mkldnn"])
def test_rnn_variants_every_path(cls, kw, path):
    I, H, T, B = 6, 8, 7, 3
    rnn = cls(I, H, **kw)
    x = torch.randn(B, T, I) if kw.get("batch_first") else torch.randn(T, B, I)
    if path == "eval_no_grad":
        rnn.eval()
    with torch.set_grad_enabled(path == "grad"), torch.backends.mkldnn.flags(enabled=path != "no_mkldnn"):
        r = count(rnn, x)
    truth = rnn_macs(cls, I, H, T * B, kw.get("num_layers", 1), 2 if kw.get("bidirectional") else 1,
                     kw.get("proj_size", 0))
    assert r.macs == truth
    assert not r.unknown_ops


def test_lstm_fused_and_decomposed_agree_elementwise_too():
    lstm = nn.LSTM(6, 8, num_layers=2, bidirectional=True)
    x = torch.randn(5, 3, 6)
    fused = count(lstm, x, elementwise=True)
    assert "mkldnn_rnn_layer" in fused.by_operator  # the fused oneDNN kernel is what ran
    with torch.backends.mkldnn.flags(enabled=False):
        plain = count(lstm, x, elementwise=True)
    assert "mkldnn_rnn_layer" not in plain.by_operator
    assert (fused.macs, fused.elementwise_flops) == (plain.macs, plain.elementwise_flops)
    # element-wise per step and row: 21 H with biases; 2 layers x 2 directions x T x B rows
    assert fused.elementwise_flops == 4 * 5 * 3 * 21 * 8


@pytest.mark.parametrize("cls", [nn.LSTM, nn.GRU, nn.RNN])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_packed_sequence_counts_real_steps(cls, bidirectional):
    I, H, lengths = 6, 8, [7, 4, 2]
    rnn = cls(I, H, batch_first=True, bidirectional=bidirectional)
    x = torch.randn(3, 7, I)
    packed = pack_padded_sequence(x, lengths, batch_first=True)
    r = count(rnn, packed)
    assert r.macs == rnn_macs(cls, I, H, sum(lengths), dirs=2 if bidirectional else 1)  # 13 rows, not 21


@pytest.mark.parametrize("cls,gates", [(nn.LSTMCell, 4), (nn.GRUCell, 3), (nn.RNNCell, 1)])
def test_cells(cls, gates):
    I, H, B = 6, 8, 5
    assert count(cls(I, H), torch.randn(B, I)).macs == B * gates * H * (I + H)


def test_batch_size_is_the_one_given():
    lstm = nn.LSTM(6, 8)
    assert count(lstm, torch.randn(4, 10, 6)).macs == 10 * count(lstm, torch.randn(4, 1, 6)).macs


def test_lstm_backward_through_mkldnn():
    lstm = nn.LSTM(6, 8, bidirectional=True)
    r = count(lstm, torch.randn(5, 3, 6), backward=True)
    assert "mkldnn_rnn_layer_backward" in r.backward_by_operator
    # data and weight gradients: two products the size of the forward gate products
    assert r.backward_macs == 2 * r.macs == 2 * rnn_macs(nn.LSTM, 6, 8, 15, dirs=2)


# -- formulas of GPU kernels, checked on CPU with their schema's arguments ------------------------


@pytest.mark.parametrize("proj", [0, 5])
@pytest.mark.parametrize("packed", [False, True])
def test_cudnn_rnn_formula(proj, packed):
    I, H, T, B, layers = 6, 8, 7, 3, 2
    lstm = nn.LSTM(I, H, num_layers=layers, bidirectional=True, proj_size=proj)
    weights = list(lstm._flat_weights)
    stride = 5 if proj else 4  # w_ih, w_hh, b_ih, b_hh [, w_hr] per layer and direction
    rows = 13 if packed else T * B
    x = torch.randn(rows, I) if packed else torch.randn(T, B, I)
    cost = cudnn_rnn_cost(x, weights, stride, 2, H, proj, layers, True)
    assert cost.macs == rnn_macs(nn.LSTM, I, H, rows, layers, 2, proj)
    assert cost.elementwise == layers * 2 * rows * 21 * H
    # the table entry unpacks _cudnn_rnn's positional arguments the same way
    args = (x, weights, stride, None, None, None, 2, H, proj, layers, False, 0.0, False, True, [], None)
    assert HANDLES["aten::_cudnn_rnn"](args, {}, None) == cost
    gru = nn.GRU(I, H)
    assert cudnn_rnn_cost(x, list(gru._flat_weights), 4, 3, H, 0, 1, False).macs == rnn_macs(nn.GRU, I, H, rows)


def test_cell_elementwise_constants():
    # written out from PyTorch's reference cells (see the docstring of rnn_cell_elementwise)
    assert rnn_cell_elementwise(2, 10, True) == 210 and rnn_cell_elementwise(2, 10, False) == 130
    assert rnn_cell_elementwise(3, 10, True) == 160 and rnn_cell_elementwise(1, 10, True) == 40
    with pytest.raises(ValueError, match="mode"):
        rnn_cell_elementwise(7, 10, True)


@pytest.mark.parametrize("op,mask_pos", [
    ("aten::_scaled_dot_product_efficient_attention", 3),
    ("aten::_scaled_dot_product_cudnn_attention", 3),
    ("aten::_scaled_dot_product_flash_attention", None),
])
def test_cuda_sdpa_formulas(op, mask_pos):
    B, H, L, S, E = 2, 4, 6, 9, 16
    q, k, v = torch.randn(B, H, L, E), torch.randn(B, H, S, E), torch.randn(B, H, S, E)
    args = [q, k, v] if mask_pos is None else [q, k, v, None, False]
    cost = HANDLES[op](args, {}, None)
    assert cost.macs == B * H * L * S * (E + E) == attention_macs(B * H, L, S, E, E)
    backward = HANDLES[op + "_backward"]([torch.randn(B, H, L, E), q, k, v], {}, None)
    assert backward.macs == B * H * L * S * (3 * E + 2 * E) == attention_backward_macs(B * H, L, S, E, E)


def test_varlen_flash_formula():
    H, E = 2, 8
    lengths = [3, 5]
    q = torch.randn(sum(lengths), H, E)
    cu = torch.tensor([0, 3, 8])
    cost = HANDLES["aten::_flash_attention_forward"]([q, q, q, cu, cu, 5, 5, 0.0, False, False], {}, None)
    assert cost.macs == sum(H * n * n * 2 * E for n in lengths)
    dense = HANDLES["aten::_efficient_attention_forward"](
        [torch.randn(2, 5, H, E), torch.randn(2, 7, H, E), torch.randn(2, 7, H, E), None, None, None], {}, None)
    assert dense.macs == 2 * H * 5 * 7 * 2 * E


def test_fused_cell_kernels():
    B, H = 3, 8
    gates = torch.randn(B, 4 * H)
    cost = HANDLES["aten::_thnn_fused_lstm_cell"]([gates, gates, torch.randn(B, H), torch.randn(4 * H),
                                                   torch.randn(4 * H)], {}, None)
    assert cost == (0, B * 21 * H)  # matmuls are separate ops; the kernel adds biases and runs the cell

    # CUDA's backward cell kernels: element-wise gate gradients, 2x the forward cell (like the RNN kernels)
    cx = torch.randn(B, H)
    back = HANDLES["aten::_thnn_fused_lstm_cell_backward_impl"]([cx, cx, cx, cx, gates, True], {}, None)
    assert back == (0, 2 * B * 21 * H)
    back = HANDLES["aten::_thnn_fused_gru_cell_backward"]([cx, torch.randn(B, 5 * H), False], {}, None)
    assert back == (0, 2 * B * 10 * H)


def test_packed_sequences_count_every_op():
    """Packing a padded batch sorts its lengths and scatters the inverse permutation: no unknown ops, and
    the LSTM's MACs follow the real lengths."""

    class Packed(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = nn.LSTM(6, 5, batch_first=True)

        def forward(self, x, lengths):
            return self.rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))[0].data

    lengths = torch.tensor([3, 7, 5])
    report = count(Packed(), torch.randn(3, 7, 6), lengths, backward=True)
    assert report.unknown_ops == {}
    assert report.macs == 4 * 5 * (6 + 5) * int(lengths.sum())
