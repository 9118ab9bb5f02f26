"""The op table: one small handle per aten op that turns a call's arguments into an ``OpCost``.

Every handle has one signature, ``handle(args, kwargs, out) -> OpCost``: ``args``/``kwargs`` are the
op's arguments as the dispatcher saw them, ``out`` is what the op returned. Shape arithmetic lives
in pure helpers (``conv_macs``, ``rnn_layer_macs``, ``attention_macs`` ...) that the tests call
directly, so the formulas of kernels this machine cannot run (cuDNN RNN, CUDA attention) are still
checked. ``OpCost.macs`` counts multiply-accumulates; ``OpCost.elementwise`` counts the other flops
(bias adds, element-wise ops, activations, normalization, pooling, interpolation) with the
per-element constants below:

* pointwise ops and activations: 1 flop per output element; reductions: 1 per input element;
* softmax / log-softmax: 3 per element (exp, sum, divide);
* batch norm: 2 per element to normalize, +1 each for weight and bias, +2 for batch statistics
  when they are computed (training mode, instance norm); layer / group norm always compute
  statistics;
* pooling: one flop per window element per output element (adaptive pooling uses the real
  window sizes); interpolation: 2 flops (multiply, add) per tap per output element, nearest = 0;
* fused kernels (mkldnn / cuDNN RNN, SDPA variants, fused multi-head attention and encoder
  layer): the element-wise terms of the reference decomposition PyTorch runs otherwise.

Backward kernels: matmul/conv gradients are counted from the ops autograd runs; fused backward
kernels count what they compute (RNN: data and weight gradients, 2x forward MACs; flash-style
attention: scores recomputed plus four gradient products).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import torch

__all__ = [
    "OpCost",
    "Handle",
    "HANDLES",
    "ZERO_OPS",
    "inplace_by_name",
    "conv_macs",
    "rnn_gate_count",
    "rnn_cell_elementwise",
    "rnn_layer_macs",
    "cudnn_rnn_cost",
    "attention_macs",
    "attention_backward_macs",
    "adaptive_window_sum",
    "classify",
]


class OpCost(NamedTuple):
    """Cost of one op call: multiply-accumulates and other (element-wise) flops."""

    macs: int = 0
    elementwise: int = 0


Handle = Callable[[Sequence[Any], dict, Any], OpCost]
ZERO = OpCost(0, 0)

# -- pure shape helpers ------------------------------------------------------------------------


def _prod(xs) -> int:
    return int(math.prod(int(x) for x in xs))


def _numel(t) -> int:
    return int(t.numel()) if isinstance(t, torch.Tensor) else 0


def _first_tensor(out):
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)):
        for o in out:
            if isinstance(o, torch.Tensor):
                return o
    return None


def _arg(args: Sequence, kwargs: dict, index: int, name: str, default=None):
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def conv_macs(x_shape: Sequence[int], w_shape: Sequence[int], out_shape: Sequence[int],
              transposed: bool = False) -> int:
    """MACs of an N-d (transposed) convolution: batch x prod(weight shape) x spatial positions.

    A normal conv visits every output position with a ``Cin/groups x k..`` dot product per output
    channel: ``N * Cout * Cin/g * prod(k) * prod(out spatial)``. A transposed conv scatters every
    *input* position into ``Cout/g x k..`` outputs: ``N * Cin * Cout/g * prod(k) * prod(in spatial)``.
    Both equal ``N * prod(w_shape) * prod(spatial)`` with the weight's own layout.
    """
    spatial = x_shape[2:] if transposed else out_shape[2:]
    return int(x_shape[0]) * _prod(w_shape) * _prod(spatial)


# RNN modes as aten numbers them (cudnn/mkldnn): 0 RNN_RELU, 1 RNN_TANH, 2 LSTM, 3 GRU.
_GATES = {0: 1, 1: 1, 2: 4, 3: 3}


def rnn_gate_count(mode: int) -> int:
    """Gates per hidden unit: 1 (RNN), 4 (LSTM), 3 (GRU)."""
    if mode not in _GATES:
        raise ValueError(f"unknown RNN mode {mode}: expected 0 (relu), 1 (tanh), 2 (LSTM) or 3 (GRU)")
    return _GATES[mode]


def rnn_cell_elementwise(mode: int, hidden: int, has_biases: bool) -> int:
    """Element-wise flops of one cell step for one batch row, as PyTorch's reference cell runs it.

    LSTM: gates = W_ih x + b_ih + W_hh h + b_hh (bias 8H, gate sum 4H), 3 sigmoids + tanh (4H),
    c' = f*c + i*g (3H), h' = o*tanh(c') (2H): 21H with biases, 13H without.
    GRU: biases 6H, r,z = sigmoid(i + h) (4H), n = tanh(i_n + r*h_n) (3H), h' = (h - n)*z + n (3H):
    16H with biases, 10H without. RNN: biases 2H, sum H, activation H: 4H, 2H without.
    """
    rnn_gate_count(mode)
    if mode == 2:
        return hidden * (21 if has_biases else 13)
    if mode == 3:
        return hidden * (16 if has_biases else 10)
    return hidden * (4 if has_biases else 2)


def rnn_layer_macs(rows: int, weight_shapes: Sequence[Sequence[int]]) -> int:
    """MACs of one RNN layer direction: every row (a time step of one sequence) multiplies by each
    weight matrix once (W_ih, W_hh and, for LSTM with proj_size, W_hr)."""
    return int(rows) * sum(_prod(s) for s in weight_shapes)


def _rows(t: torch.Tensor) -> int:
    """Rows (time steps x sequences) of an RNN/attention input whose last dim is features."""
    if t.is_nested:
        return int(t._nested_tensor_size()[:, 0].sum())
    return t.numel() // t.shape[-1] if t.shape[-1] else 0


def cudnn_rnn_cost(input: torch.Tensor, weights: Sequence[torch.Tensor], weight_stride0: int, mode: int,
                   hidden_size: int, proj_size: int, num_layers: int, bidirectional: bool) -> OpCost:
    """Cost of ``aten._cudnn_rnn``: all layers and directions, from the flat weight list.

    ``weights`` holds, per (layer, direction), ``weight_stride0`` tensors: w_ih, w_hh, [b_ih, b_hh],
    [w_hr]. The input is (T, B, I), (B, T, I) or packed (sum(batch_sizes), I): every layer runs on the
    same number of rows.
    """
    rows = _rows(input)
    dirs = 2 if bidirectional else 1
    has_biases = weight_stride0 in (4, 5)
    macs = elementwise = 0
    for group in range(num_layers * dirs):
        w = weights[group * weight_stride0:(group + 1) * weight_stride0]
        mats = [w[0].shape, w[1].shape] + ([w[-1].shape] if proj_size > 0 else [])
        macs += rnn_layer_macs(rows, mats)
        elementwise += rows * rnn_cell_elementwise(mode, hidden_size, has_biases)
    return OpCost(macs, elementwise)


def attention_macs(batch_heads: int, q_len: int, kv_len: int, qk_dim: int, v_dim: int) -> int:
    """MACs of softmax(Q K^T) V: ``L x S x E`` for the scores and ``L x S x Ev`` for the weighted sum,
    per batch x head. A causal mask does not reduce the count: the convention is the dense product
    (what the math path computes), so every kernel gives the same number."""
    return int(batch_heads) * int(q_len) * int(kv_len) * (int(qk_dim) + int(v_dim))


def attention_backward_macs(batch_heads: int, q_len: int, kv_len: int, qk_dim: int, v_dim: int) -> int:
    """MACs of a flash-style attention backward: recompute Q K^T (L S E), dV = P^T dO and
    dP = dO V^T (2 L S Ev), dQ = dS K and dK = dS^T Q (2 L S E)."""
    return int(batch_heads) * int(q_len) * int(kv_len) * (3 * int(qk_dim) + 2 * int(v_dim))


def _attention_elementwise(batch_heads: int, q_len: int, kv_len: int, qk_dim: int, masked: bool,
                           dropout: bool) -> int:
    # scale q and k (math path multiplies both by sqrt(scale)), mask add, softmax, dropout
    scores = batch_heads * q_len * kv_len
    return (batch_heads * (q_len + kv_len) * qk_dim + (scores if masked else 0) + 3 * scores
            + (2 * scores if dropout else 0))


def adaptive_window_sum(in_size: int, out_size: int) -> int:
    """Total window length of adaptive pooling along one dim: window i spans
    [floor(i*In/Out), ceil((i+1)*In/Out))."""
    total = 0
    for i in range(out_size):
        start = (i * in_size) // out_size
        end = -((-(i + 1) * in_size) // out_size)
        total += end - start
    return total


# -- handles -----------------------------------------------------------------------------------


def _mm(args, kwargs, out):
    a, b = args[0], args[1]  # (m, k) @ (k, n)
    return OpCost(a.shape[0] * a.shape[1] * b.shape[1], 0)


def _addmm(args, kwargs, out):
    a, b = args[1], args[2]  # bias + (m, k) @ (k, n); the bias add is one flop per output element
    m, n = a.shape[0], b.shape[1]
    return OpCost(m * a.shape[1] * n, m * n)


def _linear(args, kwargs, out):
    # linear(input, weight, bias): reaches the dispatcher only for nested tensors (else it is addmm/mm)
    x, w, bias = args[0], args[1], _arg(args, kwargs, 2, "bias")
    rows = _rows(x)
    return OpCost(rows * _numel(w), rows * w.shape[0] if bias is not None else 0)


def _addmm_activation(args, kwargs, out):
    cost = _addmm(args, kwargs, out)
    return OpCost(cost.macs, 2 * cost.elementwise)  # bias add + activation


def _bmm(args, kwargs, out):
    a, b = args[0], args[1]  # (B, m, k) @ (B, k, n)
    return OpCost(a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2], 0)


def _baddbmm(args, kwargs, out):
    a, b = args[1], args[2]
    return OpCost(a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2], _numel(out))


def _addbmm(args, kwargs, out):  # bias + sum_b A_b @ B_b
    a, b = args[1], args[2]
    return OpCost(a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2], _numel(out))


def _mv(args, kwargs, out):
    a = args[0]
    return OpCost(a.shape[0] * a.shape[1], 0)


def _addmv(args, kwargs, out):
    a = args[1]
    return OpCost(a.shape[0] * a.shape[1], a.shape[0])


def _dot(args, kwargs, out):
    return OpCost(_numel(args[0]), 0)


def _addr(args, kwargs, out):  # bias + outer(u, v)
    return OpCost(_numel(args[1]) * _numel(args[2]), _numel(out))


def _convolution(args, kwargs, out):
    # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    x, w, bias = args[0], args[1], _arg(args, kwargs, 2, "bias")
    transposed = bool(_arg(args, kwargs, 6, "transposed", False))
    macs = conv_macs(x.shape, w.shape, out.shape, transposed)
    return OpCost(macs, _numel(out) if bias is not None else 0)


def _convolution_backward(args, kwargs, out):
    # convolution_backward(grad_output, input, weight, bias_sizes, stride, padding, dilation, transposed,
    #                      output_padding, groups, output_mask): grad_input and grad_weight are each one
    # convolution as large as the forward; grad_bias sums grad_output.
    grad_out, x, w = args[0], args[1], args[2]
    transposed = bool(_arg(args, kwargs, 7, "transposed", False))
    mask = _arg(args, kwargs, 10, "output_mask", [True, True, True])
    fwd = conv_macs(x.shape, w.shape, grad_out.shape, transposed)
    return OpCost(fwd * (int(bool(mask[0])) + int(bool(mask[1]))), _numel(grad_out) if mask[2] else 0)


def _mkldnn_rnn_layer(args, kwargs, out):
    # mkldnn_rnn_layer(input, w_ih, w_hh, b_ih, b_hh, hx, cx, reverse, batch_sizes, mode, hidden_size,
    #                  num_layers, has_biases, bidirectional, batch_first, train): one layer, one direction.
    x, w_ih, w_hh = args[0], args[1], args[2]
    mode, hidden, has_biases = int(args[9]), int(args[10]), bool(args[12])
    rows = _rows(x)
    return OpCost(rnn_layer_macs(rows, [w_ih.shape, w_hh.shape]),
                  rows * rnn_cell_elementwise(mode, hidden, has_biases))


def _mkldnn_rnn_layer_backward(args, kwargs, out):
    # mkldnn_rnn_layer_backward(input, w1, w2, w3, w4, hx, cx, output, hy, cy, grad_output, grad_hy,
    #                           grad_cy, reverse, mode, hidden_size, num_layers, has_biases, ...)
    x, w_ih, w_hh = args[0], args[1], args[2]
    mode, hidden, has_biases = int(args[14]), int(args[15]), bool(args[17])
    rows = _rows(x)
    return OpCost(2 * rnn_layer_macs(rows, [w_ih.shape, w_hh.shape]),
                  2 * rows * rnn_cell_elementwise(mode, hidden, has_biases))


def _cudnn_rnn(args, kwargs, out):
    # _cudnn_rnn(input, weight[], weight_stride0, weight_buf, hx, cx, mode, hidden_size, proj_size,
    #            num_layers, batch_first, dropout, train, bidirectional, batch_sizes, dropout_state)
    return cudnn_rnn_cost(args[0], args[1], int(args[2]), int(args[6]), int(args[7]), int(args[8]),
                          int(args[9]), bool(args[13]))


def _cudnn_rnn_backward(args, kwargs, out):
    # _cudnn_rnn_backward(input, weight[], weight_stride0, weight_buf, hx, cx, output, grad_output,
    #                     grad_hy, grad_cy, mode, hidden_size, proj_size, num_layers, batch_first,
    #                     dropout, train, bidirectional, batch_sizes, dropout_state, reserve, output_mask)
    fwd = cudnn_rnn_cost(args[0], args[1], int(args[2]), int(args[10]), int(args[11]), int(args[12]),
                         int(args[13]), bool(args[17]))
    return OpCost(2 * fwd.macs, 2 * fwd.elementwise)


def _fused_lstm_cell(args, kwargs, out):
    # _thnn_fused_lstm_cell(input_gates, hidden_gates, cx, input_bias, hidden_bias): gates come from
    # matmuls counted separately; the kernel adds biases and runs the cell.
    gates = args[0]
    rows, hidden = gates.shape[0], gates.shape[1] // 4
    has_biases = _arg(args, kwargs, 3, "input_bias") is not None
    return OpCost(0, rows * rnn_cell_elementwise(2, hidden, has_biases))


def _fused_gru_cell(args, kwargs, out):
    gates = args[0]
    rows, hidden = gates.shape[0], gates.shape[1] // 3
    has_biases = _arg(args, kwargs, 3, "input_bias") is not None
    return OpCost(0, rows * rnn_cell_elementwise(3, hidden, has_biases))


def _fused_lstm_cell_backward(args, kwargs, out):
    # _thnn_fused_lstm_cell_backward_impl(grad_hy, grad_cy, cx, cy, workspace, has_bias): element-wise
    # gate gradients only (the matmul gradients are separate mm ops); 2x the forward cell, like RNN kernels
    rows, hidden = args[2].shape[0], args[2].shape[1]
    return OpCost(0, 2 * rows * rnn_cell_elementwise(2, hidden, bool(_arg(args, kwargs, 5, "has_bias", True))))


def _fused_gru_cell_backward(args, kwargs, out):
    # _thnn_fused_gru_cell_backward(grad_hy, workspace, has_bias)
    rows, hidden = args[0].shape[0], args[0].shape[1]
    return OpCost(0, 2 * rows * rnn_cell_elementwise(3, hidden, bool(_arg(args, kwargs, 2, "has_bias", True))))


def _sdpa_bhle(q, k, v):
    """(batch x heads, L, S, E, Ev) of tensors laid out (..., L, E)."""
    return _prod(q.shape[:-2]), q.shape[-2], k.shape[-2], q.shape[-1], v.shape[-1]


def _sdpa_handle(mask_pos: int | None, mask_name: str, dropout_pos: int, causal_pos: int) -> Handle:
    """Handle for an ``_scaled_dot_product_*`` forward op with (B, H, L, E) inputs."""

    def handle(args, kwargs, out):
        q, k, v = args[0], args[1], args[2]
        bh, L, S, E, Ev = _sdpa_bhle(q, k, v)
        mask = kwargs.get(mask_name) if mask_pos is None else _arg(args, kwargs, mask_pos, mask_name)
        causal = bool(_arg(args, kwargs, causal_pos, "is_causal", False))
        dropout = float(_arg(args, kwargs, dropout_pos, "dropout_p", 0.0) or 0.0) > 0
        return OpCost(attention_macs(bh, L, S, E, Ev),
                      _attention_elementwise(bh, L, S, E, mask is not None or causal, dropout))

    return handle


def _sdpa_backward(args, kwargs, out):
    # every *_attention*_backward takes (grad_out, query, key, value, ...)
    q, k, v = args[1], args[2], args[3]
    bh, L, S, E, Ev = _sdpa_bhle(q, k, v)
    return OpCost(attention_backward_macs(bh, L, S, E, Ev), 4 * bh * L * S)


def _varlen_attention(q, k, v, cu_q, cu_k, heads_dim: int) -> OpCost:
    """Attention over (B, L, H, E) inputs, or packed (total, H, E) with cumulative lengths."""
    if cu_q is not None and cu_k is not None:
        lq = [b - a for a, b in zip(cu_q.tolist()[:-1], cu_q.tolist()[1:])]
        lk = [b - a for a, b in zip(cu_k.tolist()[:-1], cu_k.tolist()[1:])]
        h, e, ev = q.shape[-2], q.shape[-1], v.shape[-1]
        macs = sum(attention_macs(h, a, b, e, ev) for a, b in zip(lq, lk))
        el = sum(_attention_elementwise(h, a, b, e, False, False) for a, b in zip(lq, lk))
        return OpCost(macs, el)
    b, L, h, e = q.shape
    S, ev = k.shape[1], v.shape[-1]
    return OpCost(attention_macs(b * h, L, S, e, ev), _attention_elementwise(b * h, L, S, e, False, False))


def _flash_attention_forward(args, kwargs, out):
    # _flash_attention_forward(query, key, value, cum_seq_q, cum_seq_k, max_q, max_k, dropout_p, ...)
    return _varlen_attention(args[0], args[1], args[2], _arg(args, kwargs, 3, "cum_seq_q"),
                             _arg(args, kwargs, 4, "cum_seq_k"), 2)


def _efficient_attention_forward(args, kwargs, out):
    # _efficient_attention_forward(query, key, value, bias, cu_seqlens_q, cu_seqlens_k, ...)
    return _varlen_attention(args[0], args[1], args[2], _arg(args, kwargs, 4, "cu_seqlens_q"),
                             _arg(args, kwargs, 5, "cu_seqlens_k"), 2)


def _seq_lengths(t: torch.Tensor) -> list[int]:
    """Sequence lengths of a (B, L, D) tensor or a nested tensor of (L_i, D) sequences."""
    if t.is_nested:
        return [int(n) for n in t._nested_tensor_size()[:, 0].tolist()]
    if t.dim() == 2:
        return [int(t.shape[0])]
    return [int(t.shape[-2])] * _prod(t.shape[:-2])


def _mha_cost(q, k, embed_dim: int, heads: int, masked: bool, need_weights: bool, average: bool) -> OpCost:
    """Fused multi-head attention: q/k/v projections, attention products, output projection."""
    lq, lk = _seq_lengths(q), _seq_lengths(k)
    D, dh = embed_dim, embed_dim // heads
    rows_q, rows_k = sum(lq), sum(lk)
    scores = heads * sum(a * b for a, b in zip(lq, lk))
    macs = (rows_q + 2 * rows_k) * D * D + scores * 2 * dh + rows_q * D * D
    # in-projection bias, scaling (the reference path scales q when it returns the weights, and q and k
    # through SDPA when it does not), mask add, softmax, out-projection bias, head average of weights
    scaled = rows_q * D if need_weights else (rows_q + rows_k) * D
    el = ((rows_q + 2 * rows_k) * D + scaled + (scores if masked else 0) + 3 * scores + rows_q * D
          + (scores if need_weights and average else 0))
    return OpCost(macs, el)


def _native_mha(args, kwargs, out):
    # _native_multi_head_attention(query, key, value, embed_dim, num_head, qkv_weight, qkv_bias,
    #                              proj_weight, proj_bias, mask, need_weights, average_attn_weights, ...)
    q, k = args[0], args[1]
    mask = _arg(args, kwargs, 9, "mask")
    need = bool(_arg(args, kwargs, 10, "need_weights", True))
    avg = bool(_arg(args, kwargs, 11, "average_attn_weights", True))
    return _mha_cost(q, k, int(args[3]), int(args[4]), mask is not None, need, avg)


def _encoder_layer_fwd(args, kwargs, out):
    # _transformer_encoder_layer_fwd(src, embed_dim, num_heads, qkv_weight, qkv_bias, proj_weight,
    #     proj_bias, use_gelu, norm_first, eps, norm_weight_1, norm_bias_1, norm_weight_2, norm_bias_2,
    #     ffn_weight_1, ffn_bias_1, ffn_weight_2, ffn_bias_2, mask, mask_type)
    src, D, heads = args[0], int(args[1]), int(args[2])
    ffn_w1 = args[14]
    F = int(ffn_w1.shape[0])
    mask = _arg(args, kwargs, 18, "mask")
    attn = _mha_cost(src, src, D, heads, mask is not None, False, False)
    rows = sum(_seq_lengths(src))
    macs = attn.macs + 2 * rows * D * F
    # two residual adds, two layer norms (statistics 2 + normalize 2 + affine 2), FFN biases, activation
    el = attn.elementwise + 2 * rows * D + 2 * 6 * rows * D + rows * F + rows * D + rows * F
    return OpCost(macs, el)


def _batch_norm_handle(training_pos: int | None, always_stats: bool = False) -> Handle:
    def handle(args, kwargs, out):
        x, w, b = args[0], _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
        n = _numel(x)
        training = always_stats or bool(_arg(args, kwargs, training_pos, "training", False))
        return OpCost(0, n * (2 + (w is not None) + (b is not None) + (2 if training else 0)))

    return handle


def _layer_norm(args, kwargs, out):
    # native_layer_norm(input, normalized_shape, weight, bias, eps)
    x, w, b = args[0], _arg(args, kwargs, 2, "weight"), _arg(args, kwargs, 3, "bias")
    return OpCost(0, _numel(x) * (4 + (w is not None) + (b is not None)))


def _group_norm(args, kwargs, out):
    # native_group_norm(input, weight, bias, N, C, HxW, group, eps)
    x, w, b = args[0], _arg(args, kwargs, 1, "weight"), _arg(args, kwargs, 2, "bias")
    return OpCost(0, _numel(x) * (4 + (w is not None) + (b is not None)))


def _per_element(factor: int, which: str = "out") -> Handle:
    def handle(args, kwargs, out):
        t = _first_tensor(out) if which == "out" else args[0]
        return OpCost(0, factor * _numel(t))

    return handle


def _native_dropout(args, kwargs, out):
    # native_dropout(input, p, train): mask and scale, one flop per element when training
    train = _arg(args, kwargs, 2, "train", True)
    return OpCost(0, _numel(args[0]) if train or train is None else 0)


def _kernel_elems(k, dims: int) -> int:
    k = list(k) if isinstance(k, (list, tuple)) else [k]
    return _prod(k * dims if len(k) == 1 else k)


def _pool_handle(dims: int) -> Handle:
    """Max/avg pooling: one flop (compare or add) per window element per output element."""

    def handle(args, kwargs, out):
        t = _first_tensor(out)
        return OpCost(0, _numel(t) * _kernel_elems(_arg(args, kwargs, 1, "kernel_size"), dims))

    return handle


def _pool_backward_handle(dims: int) -> Handle:
    # (grad_output, input, kernel_size, ...): every output's grad is spread over its window
    def handle(args, kwargs, out):
        return OpCost(0, _numel(args[0]) * _kernel_elems(_arg(args, kwargs, 2, "kernel_size"), dims))

    return handle


def _adaptive_pool(args, kwargs, out):
    # _adaptive_avg_pool2d(input, output_size) / adaptive_max_pool2d(input, output_size)
    x, t = args[0], _first_tensor(out)
    dims = len(_arg(args, kwargs, 1, "output_size"))
    lead = _prod(x.shape[:-dims])
    total = lead
    for i, o in zip(x.shape[-dims:], t.shape[-dims:]):
        total *= adaptive_window_sum(int(i), int(o))
    return OpCost(0, total)


def _adaptive_pool_backward(args, kwargs, out):
    # grad_output, input: the backward distributes every output's grad over its window
    grad, x = args[0], args[1]
    dims = grad.dim() - 2 if grad.dim() >= 3 else grad.dim() - 1
    total = _prod(x.shape[:-dims])
    for i, o in zip(x.shape[-dims:], grad.shape[-dims:]):
        total *= adaptive_window_sum(int(i), int(o))
    return OpCost(0, total)


def _interp(taps: int, backward: bool = False) -> Handle:
    def handle(args, kwargs, out):
        t = args[0] if backward else _first_tensor(out)
        return OpCost(0, 2 * taps * _numel(t))

    return handle


def _softmax_backward(args, kwargs, out):
    return OpCost(0, 3 * _numel(args[0]))


def _norm_backward(args, kwargs, out):  # grad_out, input, ...: d(normalize), d(affine), reductions
    return OpCost(0, 5 * _numel(args[1]))


def _scatter(args, kwargs, out):
    # scatter(self, dim, index, src|value, *, reduce=None): a copy, or one op per index with reduce=
    reduce = _arg(args, kwargs, 4, "reduce")
    return OpCost(0, _numel(args[2]) if reduce else 0)


def _scatter_add(args, kwargs, out):
    return OpCost(0, _numel(_arg(args, kwargs, 3, "src")))


def _embedding_backward(args, kwargs, out):
    return OpCost(0, _numel(args[0]))


# aten op name (packet, no overload) -> handle
HANDLES: dict[str, Handle] = {
    # matmul family (matmul, einsum, linear, tensordot decompose into these at dispatch)
    "aten::mm": _mm,
    "aten::addmm": _addmm,
    "aten::_addmm_activation": _addmm_activation,
    "aten::linear": _linear,
    "aten::bmm": _bmm,
    "aten::baddbmm": _baddbmm,
    "aten::addbmm": _addbmm,
    "aten::mv": _mv,
    "aten::addmv": _addmv,
    "aten::dot": _dot,
    "aten::vdot": _dot,
    "aten::addr": _addr,
    # convolution (all dims, grouped, dilated, transposed)
    "aten::convolution": _convolution,
    "aten::_convolution": _convolution,
    "aten::convolution_overrideable": _convolution,
    "aten::convolution_backward": _convolution_backward,
    # recurrent kernels
    "aten::mkldnn_rnn_layer": _mkldnn_rnn_layer,
    "aten::mkldnn_rnn_layer_backward": _mkldnn_rnn_layer_backward,
    "aten::_cudnn_rnn": _cudnn_rnn,
    "aten::_cudnn_rnn_backward": _cudnn_rnn_backward,
    "aten::_thnn_fused_lstm_cell": _fused_lstm_cell,
    "aten::_thnn_fused_gru_cell": _fused_gru_cell,
    "aten::_thnn_fused_lstm_cell_backward_impl": _fused_lstm_cell_backward,
    "aten::_thnn_fused_gru_cell_backward": _fused_gru_cell_backward,
    # attention kernels (inputs (B, H, L, E))
    "aten::_scaled_dot_product_flash_attention_for_cpu": _sdpa_handle(None, "attn_mask", 3, 4),
    "aten::_scaled_dot_product_flash_attention": _sdpa_handle(None, "attn_mask", 3, 4),
    "aten::_scaled_dot_product_efficient_attention": _sdpa_handle(3, "attn_bias", 5, 6),
    "aten::_scaled_dot_product_cudnn_attention": _sdpa_handle(3, "attn_bias", 5, 6),
    "aten::_scaled_dot_product_fused_attention_overrideable": _sdpa_handle(3, "attn_bias", 4, 5),
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward": _sdpa_backward,
    "aten::_scaled_dot_product_flash_attention_backward": _sdpa_backward,
    "aten::_scaled_dot_product_efficient_attention_backward": _sdpa_backward,
    "aten::_scaled_dot_product_cudnn_attention_backward": _sdpa_backward,
    "aten::_scaled_dot_product_fused_attention_overrideable_backward": _sdpa_backward,
    "aten::_flash_attention_forward": _flash_attention_forward,
    "aten::_efficient_attention_forward": _efficient_attention_forward,
    "aten::_native_multi_head_attention": _native_mha,
    "aten::_transformer_encoder_layer_fwd": _encoder_layer_fwd,
    # normalization
    "aten::native_batch_norm": _batch_norm_handle(5),
    "aten::_native_batch_norm_legit": _batch_norm_handle(5),
    "aten::_native_batch_norm_legit_functional": _batch_norm_handle(5),
    "aten::_native_batch_norm_legit_no_training": _batch_norm_handle(None),
    "aten::cudnn_batch_norm": _batch_norm_handle(5),
    "aten::miopen_batch_norm": _batch_norm_handle(5),
    "aten::native_layer_norm": _layer_norm,
    "aten::native_group_norm": _group_norm,
    "aten::native_batch_norm_backward": _norm_backward,
    "aten::native_layer_norm_backward": _norm_backward,
    "aten::native_group_norm_backward": _norm_backward,
    "aten::cudnn_batch_norm_backward": _norm_backward,
    # softmax
    "aten::_softmax": _per_element(3),
    "aten::_log_softmax": _per_element(3),
    "aten::_safe_softmax": _per_element(3),
    "aten::_softmax_backward_data": _softmax_backward,
    "aten::_log_softmax_backward_data": _softmax_backward,
    # activations without the pointwise tag
    "aten::hardswish": _per_element(1),
    "aten::hardswish_": _per_element(1, "in"),
    "aten::hardsigmoid": _per_element(1),
    "aten::hardsigmoid_": _per_element(1, "in"),
    "aten::prelu": _per_element(1),
    "aten::_prelu_kernel": _per_element(1),
    "aten::glu": _per_element(2, "in"),
    "aten::native_dropout": _native_dropout,
    "aten::native_dropout_backward": _per_element(1),
    # pooling
    "aten::max_pool1d": _pool_handle(1),
    "aten::max_pool2d": _pool_handle(2),
    "aten::max_pool3d": _pool_handle(3),
    "aten::max_pool1d_with_indices": _pool_handle(1),
    "aten::max_pool2d_with_indices": _pool_handle(2),
    "aten::max_pool3d_with_indices": _pool_handle(3),
    "aten::avg_pool1d": _pool_handle(1),
    "aten::avg_pool2d": _pool_handle(2),
    "aten::avg_pool3d": _pool_handle(3),
    "aten::max_pool2d_with_indices_backward": _pool_backward_handle(2),
    "aten::max_pool3d_with_indices_backward": _pool_backward_handle(3),
    "aten::avg_pool2d_backward": _pool_backward_handle(2),
    "aten::avg_pool3d_backward": _pool_backward_handle(3),
    "aten::_adaptive_avg_pool2d": _adaptive_pool,
    "aten::_adaptive_avg_pool3d": _adaptive_pool,
    "aten::adaptive_max_pool2d": _adaptive_pool,
    "aten::adaptive_max_pool3d": _adaptive_pool,
    "aten::adaptive_avg_pool1d": _adaptive_pool,
    "aten::adaptive_max_pool1d": _adaptive_pool,
    "aten::_adaptive_avg_pool2d_backward": _adaptive_pool_backward,
    "aten::_adaptive_avg_pool3d_backward": _adaptive_pool_backward,
    "aten::adaptive_max_pool2d_backward": _adaptive_pool_backward,
    "aten::adaptive_max_pool3d_backward": _adaptive_pool_backward,
    # interpolation (2 flops per tap per output element; nearest is a copy)
    "aten::upsample_linear1d": _interp(2),
    "aten::upsample_bilinear2d": _interp(4),
    "aten::_upsample_bilinear2d_aa": _interp(4),
    "aten::upsample_trilinear3d": _interp(8),
    "aten::upsample_bicubic2d": _interp(16),
    "aten::_upsample_bicubic2d_aa": _interp(16),
    "aten::upsample_linear1d_backward": _interp(2, backward=True),
    "aten::upsample_bilinear2d_backward": _interp(4, backward=True),
    "aten::upsample_trilinear3d_backward": _interp(8, backward=True),
    "aten::upsample_bicubic2d_backward": _interp(16, backward=True),
    "aten::upsample_nearest1d_backward": _per_element(1, "in"),
    "aten::upsample_nearest2d_backward": _per_element(1, "in"),
    "aten::upsample_nearest3d_backward": _per_element(1, "in"),
    # scatter/gather arithmetic
    "aten::scatter": _scatter,
    "aten::scatter_": _scatter,
    "aten::scatter_add": _scatter_add,
    "aten::scatter_add_": _scatter_add,
    "aten::index_add": _scatter_add,
    "aten::index_add_": _scatter_add,
    "aten::embedding_dense_backward": _embedding_backward,
    "aten::cumsum": _per_element(1, "in"),
    "aten::cumprod": _per_element(1, "in"),
}

# Ops that cost no flops on purpose: data movement, memory allocation and fills, shape and
# metadata, indexing copies, selections (where, masked_fill: no arithmetic), RNG fills (dropout's
# mask *multiply* is counted), conversions, packing, sorting (comparisons, no arithmetic: packing a
# padded batch sorts its lengths).
ZERO_OPS: frozenset[str] = frozenset(
    "aten::" + n
    for n in """
    clone copy_ _to_copy _copy_from _copy_from_and_resize to contiguous cat stack hstack vstack
    zeros zeros_like ones ones_like empty empty_like empty_strided new_zeros new_ones new_empty
    new_empty_strided new_full full full_like scalar_tensor fill_ zero_ fill detach lift_fresh
    lift_fresh_copy alias _unsafe_view unbind split unsafe_split split_with_sizes unsafe_split_with_sizes
    unsafe_chunk chunk index_select gather index index_put_ index_put _index_put_impl_ masked_select
    nonzero arange linspace randn rand randint randperm normal_ uniform_ bernoulli_ bernoulli random_
    exponential_ _local_scalar_dense item sym_size sym_stride sym_numel is_nonzero equal embedding repeat
    tile flip roll constant_pad_nd reflection_pad1d reflection_pad2d reflection_pad3d replication_pad1d
    replication_pad2d replication_pad3d _reshape_alias as_strided as_strided_ set_ resize_ resize_as_
    _reshape_copy tril triu tril_ triu_ upsample_nearest1d upsample_nearest2d upsample_nearest3d
    _upsample_nearest_exact1d _upsample_nearest_exact2d _upsample_nearest_exact3d
    _pack_padded_sequence _pad_packed_sequence _nested_tensor_from_mask _nested_tensor_from_mask_left_aligned
    to_padded_tensor _nested_tensor_from_tensor_list _nested_view_from_buffer im2col one_hot
    masked_scatter select_backward slice_backward index_select_backward unfold_backward
    _unsafe_index _unsafe_index_put pixel_shuffle pixel_unshuffle channel_shuffle native_channel_shuffle
    where masked_fill masked_fill_ _linalg_check_errors _assert_async _assert_tensor_metadata
    _functional_assert_async record_stream sort argsort
    """.split()
)


# Element-wise ops that older torch releases do not tag ``pointwise`` (2.11 leaves leaky_relu out).
UNTAGGED_POINTWISE: frozenset[str] = frozenset(
    "aten::" + n for n in "leaky_relu leaky_relu_ leaky_relu_backward".split()
)


def _name(func) -> str:
    return func._schema.name


def _is_inplace(func, tags) -> bool:
    """``add_`` and the like: torch >= 2.13 tags them; older releases only name them with a trailing ``_``."""
    tag = getattr(torch.Tag, "inplace", None)
    return tag in tags if tag is not None else inplace_by_name(_name(func))


def inplace_by_name(name: str) -> bool:
    """Whether an aten op name is an in-place variant by the naming rule (`add_`, `__iand__`): what tells in-place
    ops apart on torch releases without `Tag.inplace`."""
    base = name.split("::")[-1]
    if base.startswith("__") and base.endswith("__"):  # operators: __ixor__ is in place, __xor__ is not
        return base.startswith("__i")
    return base.endswith("_")  # aten::add_


def classify(func, overrides: dict[str, Handle | None] | None = None) -> tuple[str, Handle | None]:
    """How an op is counted: ("handle", fn), ("zero", None), ("pointwise", fn), ("reduction", fn)
    or ("unknown", None). ``overrides`` maps op names to handles (None: ignore on purpose)."""
    name = _name(func)
    if overrides and name in overrides:
        h = overrides[name]
        return ("zero", None) if h is None else ("handle", h)
    if name in HANDLES:
        return "handle", HANDLES[name]
    tags = func.tags
    if name in ZERO_OPS or func.is_view or torch.Tag.view_copy in tags or torch.Tag.inplace_view in tags:
        return "zero", None
    if torch.Tag.pointwise in tags or name in UNTAGGED_POINTWISE:
        inplace = _is_inplace(func, tags)
        return "pointwise", _per_element(1, "in" if inplace else "out")
    if torch.Tag.reduction in tags:
        return "reduction", _per_element(1, "in")
    return "unknown", None
