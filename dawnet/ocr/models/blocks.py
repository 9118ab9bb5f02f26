"""Building blocks of the line recognizers: layer factories, CNN feature extractors, BiLSTM, heads.

Every stage keeps track of *lengths*: the number of valid columns of each line in a padded batch.
Convolution stacks zero the padded columns after each layer, so a line gives the same features
alone or padded inside a batch (in eval mode), and the sequence model packs the valid steps only.
Stage layout follows the scene-text benchmark (Baek et al. 2019, "What is wrong with scene text
recognition model comparisons?"): feature extraction -> sequence modelling -> prediction.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

__all__ = [
    "get_act_layer",
    "get_norm_layer",
    "conv_out_length",
    "width_mask",
    "ConvNormAct",
    "BasicBlock",
    "VGGBackbone",
    "ResNetBackbone",
    "BiLSTM",
    "CTCHead",
    "AttentionDecoder",
]

_ACTS = {"relu": nn.ReLU, "leaky_relu": nn.LeakyReLU, "gelu": nn.GELU, "silu": nn.SiLU, "elu": nn.ELU,
         "prelu": nn.PReLU, "tanh": nn.Tanh}
_NORMS = {"batch": nn.BatchNorm2d, "batchnorm": nn.BatchNorm2d, "instance": nn.InstanceNorm2d}


def get_act_layer(act: str | type[nn.Module] | None) -> type[nn.Module] | None:
    """An activation class from a name (``"relu"``, ``"gelu"``, ...) or a class; None/"" for none."""
    if not act:
        return None
    if isinstance(act, type):
        return act
    try:
        return _ACTS[act.lower()]
    except KeyError:
        raise ValueError(f"unknown activation {act!r}; choose one of {sorted(_ACTS)} or pass a class") from None


def get_norm_layer(norm: str | type[nn.Module] | None) -> type[nn.Module] | None:
    """A 2-d norm class from a name (``"batch"``, ``"instance"``) or a class; None/""/"none" for none."""
    if not norm or norm == "none":
        return None
    if isinstance(norm, type):
        return norm
    try:
        return _NORMS[norm.lower()]
    except KeyError:
        raise ValueError(f"unknown norm {norm!r}; choose one of {sorted(_NORMS)}, 'none' or pass a class") from None


def conv_out_length(lengths: torch.Tensor, kernel: int, stride: int = 1, padding: int = 0,
                    dilation: int = 1) -> torch.Tensor:
    """Output length of a conv/pool along one axis (PyTorch's floor formula), elementwise."""
    return torch.div(lengths + 2 * padding - dilation * (kernel - 1) - 1, stride, rounding_mode="floor") + 1


def width_mask(lengths: torch.Tensor, width: int) -> torch.Tensor:
    """(N, 1, 1, W) float mask: 1 on the first ``lengths[i]`` columns of line i, 0 on padding."""
    cols = torch.arange(width, device=lengths.device)
    return (cols[None, :] < lengths[:, None]).to(torch.get_default_dtype())[:, None, None, :]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _act(act_layer) -> nn.Module:
    try:
        return act_layer(inplace=True)
    except TypeError:  # GELU, PReLU, Tanh take no `inplace`
        return act_layer()


class ConvNormAct(nn.Sequential):
    """Conv2d -> optional norm -> optional activation ("same" padding by default)."""

    def __init__(self, in_chs: int, out_chs: int, kernel_size=3, stride=1, padding=None,
                 norm_layer="batch", act_layer="relu"):
        kernel_size, stride = _pair(kernel_size), _pair(stride)
        padding = tuple(k // 2 for k in kernel_size) if padding is None else _pair(padding)
        norm, act = get_norm_layer(norm_layer), get_act_layer(act_layer)
        layers = [nn.Conv2d(in_chs, out_chs, kernel_size, stride, padding, bias=norm is None)]
        if norm is not None:
            layers.append(norm(out_chs))
        if act is not None:
            layers.append(_act(act))
        super().__init__(*layers)

    def width_ops(self) -> list[tuple[int, int, int]]:
        """(kernel, stride, padding) along the width axis, for length bookkeeping."""
        c = self[0]
        return [(c.kernel_size[1], c.stride[1], c.padding[1])]


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs + identity/1x1 shortcut), width-preserving, mask-aware."""

    def __init__(self, in_chs: int, out_chs: int, norm_layer="batch", act_layer="relu"):
        super().__init__()
        self.conv1 = ConvNormAct(in_chs, out_chs, 3, norm_layer=norm_layer, act_layer=act_layer)
        self.conv2 = ConvNormAct(out_chs, out_chs, 3, norm_layer=norm_layer, act_layer=None)
        self.shortcut = (nn.Identity() if in_chs == out_chs
                         else ConvNormAct(in_chs, out_chs, 1, norm_layer=norm_layer, act_layer=None))
        self.act = _act(get_act_layer(act_layer))

    def zero_init_last(self) -> None:
        """Start each residual branch at zero (Goyal et al. 2017), so a deep stack trains from step one."""
        norm = self.conv2[1] if len(self.conv2) > 1 else None
        if isinstance(norm, nn.BatchNorm2d):
            nn.init.zeros_(norm.weight)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        y = self.conv1(x)
        if mask is not None:  # keep padded columns zero between the two convs
            y = y * mask
        return self.act(self.conv2(y) + self.shortcut(x))

    def width_ops(self) -> list[tuple[int, int, int]]:
        return []  # stride 1, same padding


class _Backbone(nn.Module):
    """A sequence of width-tracked layers; output (N, C, H', T) plus the valid length of each line."""

    in_height: int
    out_channels: int
    out_height: int

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        if x.shape[-2] != self.in_height:
            raise ValueError(f"this model reads lines {self.in_height} px high, got {x.shape[-2]} px: resize the "
                             f"line to height {self.in_height} keeping its aspect ratio (Agent.prepare does this)")
        width = x.shape[-1]
        if lengths is None:
            lengths = torch.full((x.shape[0],), width, dtype=torch.long, device=x.device)
        padded = bool((lengths < width).any())
        if padded:
            x = x * width_mask(lengths, width)
        for layer in self.layers:
            mask = width_mask(lengths, x.shape[-1]) if padded else None
            x = layer(x, mask) if isinstance(layer, BasicBlock) else layer(x)
            for k, s, p in _width_ops(layer):
                lengths = conv_out_length(lengths, k, s, p)
            if padded:
                x = x * width_mask(lengths, x.shape[-1])
        return x, lengths

    def out_lengths(self, widths: torch.Tensor) -> torch.Tensor:
        """Valid output steps for input widths, without running the network."""
        for layer in self.layers:
            for k, s, p in _width_ops(layer):
                widths = conv_out_length(widths, k, s, p)
        return widths


def _width_ops(layer: nn.Module) -> list[tuple[int, int, int]]:
    if hasattr(layer, "width_ops"):
        return layer.width_ops()
    if isinstance(layer, (nn.MaxPool2d, nn.AvgPool2d)):
        k, s, p = _pair(layer.kernel_size), _pair(layer.stride), _pair(layer.padding)
        return [(k[1], s[1], p[1])]
    if isinstance(layer, (nn.Dropout, nn.Dropout2d, nn.Identity)):
        return []
    raise TypeError(f"cannot track widths through {type(layer).__name__}; give it a width_ops() method")


def _pool(kind: str) -> nn.Module | None:
    """'2x2' halves height and width, '2x1' halves height only (keeps time resolution), '-' none."""
    if kind == "2x2":
        return nn.MaxPool2d(2, 2)
    if kind == "2x1":
        return nn.MaxPool2d((2, 1), (2, 1))
    if kind in ("-", "", None):
        return None
    raise ValueError(f"pool must be '2x2', '2x1' or '-', got {kind!r}")


def _height_pools(height: int, pools: Sequence[str]) -> list[str]:
    """Extend ``pools`` with extra height-only pools so taller lines reach the same feature height."""
    h = height
    for p in pools:
        if p in ("2x2", "2x1"):
            h //= 2
    extra = []
    while h > 4:  # e.g. 64 px lines get one more 2x1 pool than 32 px lines
        extra.append("2x1")
        h //= 2
    return list(pools) + extra


class VGGBackbone(_Backbone):
    """VGG-style CRNN stack (Shi et al. 2017, "An end-to-end trainable neural network for image-based
    sequence recognition"): stages of 3x3 conv-BN-ReLU separated by max pools.

    Args:
        in_chans (1): input channels (grayscale lines).
        height (32): input height in px (16..128); lines are resized to it.
        width (64): channels of the first stage; stages use width x (1, 2, 4, 8, 8).
        depths ((1, 1, 2, 2, 1)): convs per stage.
        pools (("2x2", "2x2", "2x1", "2x1", "-")): pool after each stage; the time axis is 1/4 of the width.
        norm_layer ("batch"), act_layer ("relu"): layer names or classes.
        stem_stride (1): 2 makes the first conv stride 2x2 in place of the first 2x2 max pool: the same
            output shape with a quarter of the full-resolution work (faster training and CPU inference).
    """

    def __init__(self, in_chans: int = 1, height: int = 32, width: int = 64, depths=(1, 1, 2, 2, 1),
                 pools=("2x2", "2x2", "2x1", "2x1", "-"), norm_layer="batch", act_layer="relu",
                 multipliers=(1, 2, 4, 8, 8), stem_stride: int = 1):
        super().__init__()
        if len(depths) != len(pools) or len(depths) > len(multipliers):
            raise ValueError(f"depths {tuple(depths)} and pools {tuple(pools)} need one entry per stage "
                             f"(at most {len(multipliers)} stages)")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride!r}")
        if stem_stride == 2 and (depths[0] != 1 or pools[0] != "2x2"):
            raise ValueError("stem_stride=2 replaces the first stage's 2x2 pool: it needs depths[0] == 1 and "
                             f"pools[0] == '2x2', got depths {tuple(depths)}, pools {tuple(pools)}")
        _check_height(height)
        self.in_height, self.stem_stride = height, stem_stride
        pools = _height_pools(height, pools)
        layers, chs, self.feature_info, h, red = [], in_chans, [], height, 1
        for i, (d, m) in enumerate(zip(depths, multipliers)):
            out = width * m
            for _ in range(d):
                stride = stem_stride if not layers else 1
                layers.append(ConvNormAct(chs, out, 3, stride, norm_layer=norm_layer, act_layer=act_layer))
                chs = out
            strided = stem_stride == 2 and i == 0  # the stem conv already did this stage's 2x2 pooling
            pool = None if strided else _pool(pools[i])
            if pool is not None:
                layers.append(pool)
            if strided or pool is not None:
                h //= 2
                red *= 2 if pools[i] == "2x2" else 1
            self.feature_info.append({"num_chs": chs, "reduction": (height // h, red),
                                      "module": f"layers.{len(layers) - 1}"})
        for p in pools[len(depths):]:
            layers.append(_pool(p))
            h //= 2
        self.layers = nn.ModuleList(layers)
        self.out_channels, self.out_height = chs, h


class ResNetBackbone(_Backbone):
    """ResNet-style stack (basic blocks) as in the scene-text benchmark's ResNet extractor (FAN, Cheng
    et al. 2017), with max pools between stages.

    Args:
        in_chans (1), height (32): input channels and height.
        width (64): channels of the first stage; stages use width x (1, 2, 4, 8); the stem uses width / 2.
        depths ((1, 2, 5, 3)): basic blocks per stage.
        pools (("2x2", "2x2", "2x1", "2x1")): pool *before* each stage.
        norm_layer ("batch"), act_layer ("relu"): layer names or classes.
    """

    def __init__(self, in_chans: int = 1, height: int = 32, width: int = 64, depths=(1, 2, 5, 3),
                 pools=("2x2", "2x2", "2x1", "2x1"), norm_layer="batch", act_layer="relu",
                 multipliers=(1, 2, 4, 8), zero_init_last: bool = True):
        super().__init__()
        if len(depths) != len(pools) or len(depths) > len(multipliers):
            raise ValueError(f"depths {tuple(depths)} and pools {tuple(pools)} need one entry per stage "
                             f"(at most {len(multipliers)} stages)")
        _check_height(height)
        self.in_height = height
        stem = max(width // 2, 1)
        layers = [ConvNormAct(in_chans, stem, 3, norm_layer=norm_layer, act_layer=act_layer)]
        chs, h, red, self.feature_info = stem, height, 1, []
        pools = _height_pools(height, pools)
        for i, (d, m) in enumerate(zip(depths, multipliers)):
            pool = _pool(pools[i])
            if pool is not None:
                layers.append(pool)
                h //= 2
                red *= 2 if pools[i] == "2x2" else 1
            for _ in range(d):
                layers.append(BasicBlock(chs, width * m, norm_layer=norm_layer, act_layer=act_layer))
                chs = width * m
            self.feature_info.append({"num_chs": chs, "reduction": (height // h, red),
                                      "module": f"layers.{len(layers) - 1}"})
        for p in pools[len(depths):]:
            layers.append(_pool(p))
            h //= 2
        self.layers = nn.ModuleList(layers)
        self.out_channels, self.out_height = chs, h
        if zero_init_last:
            for m in self.modules():
                if isinstance(m, BasicBlock):
                    m.zero_init_last()


def _check_height(height: int) -> None:
    if not isinstance(height, int) or not 16 <= height <= 128:
        raise ValueError(f"height must be an integer from 16 to 128 px (32-64 is typical), got {height!r}")


class BiLSTM(nn.Module):
    """Stacked bidirectional LSTM over (N, T, D) features; padded steps are packed away."""

    def __init__(self, in_dim: int, hidden: int = 256, num_layers: int = 2, dropout: float = 0.0):
        super().__init__()
        self.rnn = nn.LSTM(in_dim, hidden, num_layers=num_layers, bidirectional=True, batch_first=True,
                           dropout=dropout if num_layers > 1 else 0.0)
        self.out_dim = 2 * hidden

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        total = x.shape[1]
        if bool((lengths == total).all()):  # no padding: skip packing (faster at batch 1)
            return self.rnn(x)[0]
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=total)[0]


class CTCHead(nn.Module):
    """Linear classifier over time steps; returns log-probabilities (N, T, C) for CTC (blank = 0)."""

    def __init__(self, in_dim: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(in_dim, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.fc(self.drop(x)), dim=-1)


class AttentionDecoder(nn.Module):
    """LSTM decoder with additive (Bahdanau) or multiplicative (Luong "general") attention.

    Token ids follow :class:`dawnet.ocr.charset.Charset`: 0 = pad, ``end_id`` = num_classes - 2 and
    ``start_id`` = num_classes - 1 (an input only; never predicted). The state between steps is
    ``(h, c, context)``; Luong attention feeds the previous context back in ("input feeding").

    Args:
        in_dim: feature size of the encoder output.
        num_classes: pad + characters + end + start.
        hidden (256): LSTM cell size.
        embed_dim (None: hidden / 2): character embedding size.
        attention ("bahdanau"): "bahdanau" (Bahdanau et al. 2015) or "luong" (Luong et al. 2015).
    """

    def __init__(self, in_dim: int, num_classes: int, hidden: int = 256, embed_dim: int | None = None,
                 attention: str = "bahdanau", dropout: float = 0.0):
        super().__init__()
        if attention not in ("bahdanau", "luong"):
            raise ValueError(f"attention must be 'bahdanau' or 'luong', got {attention!r}")
        if num_classes < 4:
            raise ValueError(f"an attention decoder needs pad + >=1 character + end + start, got {num_classes}")
        embed_dim = embed_dim or max(hidden // 2, 8)
        self.attention, self.hidden, self.in_dim, self.num_classes = attention, hidden, in_dim, num_classes
        self.pad_id, self.end_id, self.start_id = 0, num_classes - 2, num_classes - 1
        self.embed = nn.Embedding(num_classes, embed_dim)
        self.rnn = nn.LSTMCell(embed_dim + in_dim, hidden)
        if attention == "bahdanau":
            self.mem_proj = nn.Linear(in_dim, hidden, bias=False)
            self.query_proj = nn.Linear(hidden, hidden)
            self.score = nn.Linear(hidden, 1, bias=False)
        else:
            self.mem_proj = nn.Linear(in_dim, hidden, bias=False)  # score = h . (W m)
        self.drop = nn.Dropout(dropout)
        self.out = nn.Linear(hidden + in_dim, num_classes)

    # -- the step API (used by forward and by beam search) --------------------------------------
    def init_state(self, memory: torch.Tensor, lengths: torch.Tensor):
        """Precompute what every step needs: ``(state, keys, mask)`` for (N, T, D) memory."""
        n, t, _ = memory.shape
        mask = torch.arange(t, device=memory.device)[None, :] < lengths[:, None]  # (N, T) True = valid
        keys = self.mem_proj(memory)
        z = memory.new_zeros(n, self.hidden)
        return (z, z.clone(), memory.new_zeros(n, self.in_dim)), keys, mask

    def _attend(self, query, memory, keys, mask):
        if self.attention == "bahdanau":
            e = self.score(torch.tanh(keys + self.query_proj(query)[:, None, :])).squeeze(-1)  # (N, T)
        else:
            e = torch.bmm(keys, query[:, :, None]).squeeze(-1)
        alpha = torch.softmax(e.masked_fill(~mask, float("-inf")), dim=-1)
        return torch.bmm(alpha[:, None, :], memory).squeeze(1), alpha  # (N, D), (N, T)

    def step(self, prev: torch.Tensor, state, memory, keys, mask):
        """One decoding step: previous token ids (N,) -> logits (N, C), new state."""
        h, c, ctx = state
        emb = self.embed(prev)
        if self.attention == "bahdanau":
            ctx, _ = self._attend(h, memory, keys, mask)
            h, c = self.rnn(torch.cat([emb, ctx], -1), (h, c))
        else:
            h, c = self.rnn(torch.cat([emb, ctx], -1), (h, c))
            ctx, _ = self._attend(h, memory, keys, mask)
        logits = self.out(self.drop(torch.cat([h, ctx], -1)))
        return logits, (h, c, ctx)

    def forward(self, memory: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor | None = None,
                max_length: int | None = None):
        """Teacher forcing when ``targets`` (N, S) decoder inputs ``[start, c1, ..., cn, pad...]`` are
        given: logits (N, S, C). Otherwise greedy decoding: logits of the chosen path (N, S', C); line i
        stops at its end token or after ``default_max_length(lengths[i])`` (at most ``max_length``) steps."""
        state, keys, mask = self.init_state(memory, lengths)
        if targets is not None:
            steps = []
            for i in range(targets.shape[1]):
                logits, state = self.step(targets[:, i], state, memory, keys, mask)
                steps.append(logits)
            return torch.stack(steps, 1)
        limits = default_max_length(lengths) if max_length is None else torch.clamp(
            default_max_length(lengths), max=max_length)
        n = memory.shape[0]
        prev = torch.full((n, ), self.start_id, dtype=torch.long, device=memory.device)
        done = torch.zeros(n, dtype=torch.bool, device=memory.device)
        steps = []
        for i in range(int(limits.max())):
            logits, state = self.step(prev, state, memory, keys, mask)
            logits = self.mask_specials(logits)
            steps.append(logits)
            prev = logits.argmax(-1)
            done = done | (prev == self.end_id) | (limits <= i + 1)  # ended, or at this line's length limit
            if bool(done.all()):
                break
        return torch.stack(steps, 1)

    def mask_specials(self, logits: torch.Tensor) -> torch.Tensor:
        """Pad and start are never outputs: give them -inf so no search can pick them."""
        logits = logits.clone()
        logits[..., self.pad_id] = float("-inf")
        logits[..., self.start_id] = float("-inf")
        return logits


def default_max_length(steps):
    """Longest output an attention decoder may emit for ``steps`` encoder steps (an int or a tensor per
    line): one character per step at most, plus the end token, capped so a degenerate model stops."""
    if isinstance(steps, torch.Tensor):
        return torch.clamp(steps + 1, min=1, max=512)
    return int(min(steps + 1, 512)) if steps > 0 else 1
