"""The modular line recognizer (the "base model") and its registered presets.

One class, three stages chosen by name (like the scene-text benchmark of Baek et al. 2019):

    feature extractor  "vgg" (CRNN stack) | "resnet"       sized by ``width`` and ``depths``
    sequence model     "bilstm" (``seq_layers`` layers) | "none"
    prediction head    "ctc" | "attn" (Bahdanau or Luong attention decoder)

Input: grayscale lines ``(N, 1, H, W)`` of the configured height and any width, plus the valid
width of each line in a padded batch. ``forward`` is a plain tensors-in/tensors-out function:

    CTC:        forward(x, widths)          -> (log_probs (N, T, C), lengths (N,))
    attention:  forward(x, widths, inputs)  -> (logits (N, S, C), lengths (N,))   # teacher forcing
                forward(x, widths)          -> (logits (N, S, C), lengths (N,))   # greedy decoding

Nothing about learning lives here: losses and decoding belong to ``dawnet.ocr.agents`` and
``dawnet.ocr.decode``. Presets are registered functions whose names say what changed; the
caller's keyword arguments are merged last (``create_model("crnn", num_classes=80, height=48)``).
"""

from __future__ import annotations

import torch
from torch import nn

from dawnet.ocr.models.blocks import (
    AttentionDecoder,
    BiLSTM,
    CTCHead,
    ResNetBackbone,
    VGGBackbone,
    default_max_length,
)
from dawnet.registry import register_model

__all__ = ["Recognizer", "crnn", "crnn_small", "crnn_medium", "crnn_large", "crnn_resnet", "attn", "attn_resnet",
           "attn_small", "attn_luong", "model_cfgs"]

# Benchmark metadata beside each preset (STYLE habit 11): what the benchmark and CLI read instead of flags.
_BASE_CFG = {"height": 32, "in_chans": 1, "normalize": "ink=1, paper=0 (inverted grayscale in [0, 1])",
             "weights": None, "license": "MIT", "origin": "dawnet"}
model_cfgs: dict[str, dict] = {
    "crnn": {**_BASE_CFG, "head": "ctc", "paper": "Shi et al. 2017 (CRNN), quarter width, strided stem: CPUs"},
    "crnn_small": {**_BASE_CFG, "head": "ctc", "paper": "CRNN, quarter width: tests and digit strings"},
    "crnn_medium": {**_BASE_CFG, "head": "ctc", "paper": "Shi et al. 2017 (CRNN), half width"},
    "crnn_large": {**_BASE_CFG, "head": "ctc", "paper": "Shi et al. 2017 (CRNN), original widths"},
    "crnn_resnet": {**_BASE_CFG, "head": "ctc", "paper": "ResNet-BiLSTM-CTC (Baek et al. 2019)"},
    "attn": {**_BASE_CFG, "head": "attn", "paper": "VGG-BiLSTM-Attn + joint CTC (Kim et al. 2017): CPUs"},
    "attn_resnet": {**_BASE_CFG, "head": "attn", "paper": "ResNet-BiLSTM-Attn (Baek et al. 2019), slimmed"},
    "attn_small": {**_BASE_CFG, "head": "attn", "paper": "VGG-BiLSTM-Attn, quarter width"},
    "attn_luong": {**_BASE_CFG, "head": "attn", "paper": "VGG-BiLSTM-Attn with Luong attention"},
}


class Recognizer(nn.Module):
    """A text-line recognizer: CNN features -> optional BiLSTM -> CTC or attention head.

    Args:
        num_classes (96): output classes: ``charset.num_ctc_classes`` (blank + characters) for CTC,
            ``charset.num_attn_classes`` (pad + characters + end + start) for attention.
        in_chans (1): input channels (grayscale).
        height (32): line height in px the model reads (16..128; 32-64 typical).
        backbone ("vgg"): "vgg" (CRNN stack) or "resnet".
        width (64): channels of the first CNN stage.
        depths (None: the backbone's default): convs (vgg) or basic blocks (resnet) per stage.
        pools (None: the backbone's default): per stage "2x2", "2x1" or "-"; time steps = width / 4.
        norm_layer ("batch"), act_layer ("relu"): names or classes.
        seq ("bilstm"): "bilstm" or "none".
        hidden (256): LSTM size per direction.
        seq_layers (2): BiLSTM layers.
        dropout (0.0): dropout between LSTM layers and before the head.
        head ("ctc"): "ctc" or "attn".
        attention ("bahdanau"): "bahdanau" or "luong" (attention head only).
        dec_hidden (256): attention decoder LSTM size.
        max_length (None: encoder steps + 1): longest greedy attention output.
        stem_stride (1): 2 strides the first VGG conv instead of max-pooling after it (see VGGBackbone).
        aux_ctc (False): attention head only: a CTC head on the encoder trained beside the decoder
            (joint CTC-attention, Kim et al. 2017): the CTC loss forces monotonic, well-placed
            encoder features, so the attention decoder converges in far fewer steps. Training with
            teacher forcing then returns a third output, ``(ctc_log_probs (N, T, C-2), lengths)``.
    """

    def __init__(self, num_classes: int = 96, in_chans: int = 1, height: int = 32, backbone: str = "vgg",
                 width: int = 64, depths=None, pools=None, norm_layer="batch", act_layer="relu",
                 seq: str = "bilstm", hidden: int = 256, seq_layers: int = 2, dropout: float = 0.0,
                 head: str = "ctc", attention: str = "bahdanau", dec_hidden: int = 256,
                 max_length: int | None = None, stem_stride: int = 1, aux_ctc: bool = False):
        super().__init__()
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2 (blank + characters), got {num_classes!r}")
        kw = {"in_chans": in_chans, "height": height, "width": width, "norm_layer": norm_layer,
              "act_layer": act_layer}
        if depths is not None:
            kw["depths"] = tuple(depths)
        if pools is not None:
            kw["pools"] = tuple(pools)
        if stem_stride != 1:
            if backbone != "vgg":
                raise ValueError(f"stem_stride is a VGG backbone option, got backbone={backbone!r}")
            kw["stem_stride"] = stem_stride
        if backbone == "vgg":
            self.backbone = VGGBackbone(**kw)
        elif backbone == "resnet":
            self.backbone = ResNetBackbone(**kw)
        else:
            raise ValueError(f"backbone must be 'vgg' or 'resnet', got {backbone!r}")
        feat_dim = self.backbone.out_channels * self.backbone.out_height  # columns are flattened (C x H')
        if seq == "bilstm":
            if seq_layers < 1:
                raise ValueError(f"seq_layers must be >= 1 with seq='bilstm' (or seq='none'), got {seq_layers}")
            self.seq = BiLSTM(feat_dim, hidden, seq_layers, dropout)
            seq_dim = self.seq.out_dim
        elif seq == "none":
            self.seq = None
            seq_dim = feat_dim
        else:
            raise ValueError(f"seq must be 'bilstm' or 'none', got {seq!r}")
        self.head_kind, self.num_classes, self.height, self.in_chans = head, num_classes, height, in_chans
        self.num_features, self.max_length, self.dropout = seq_dim, max_length, dropout
        self._head_kw = {"attention": attention, "dec_hidden": dec_hidden}
        self.head = self._make_head(num_classes)
        if aux_ctc and head != "attn":
            raise ValueError(f"aux_ctc is the joint CTC loss of an attention head; head={head!r} is CTC already")
        self.aux_ctc = CTCHead(seq_dim, num_classes - 2, dropout) if aux_ctc else None  # blank + characters
        self.feature_info = self.backbone.feature_info

    def _make_head(self, num_classes: int) -> nn.Module:
        if self.head_kind == "ctc":
            return CTCHead(self.num_features, num_classes, self.dropout)
        if self.head_kind == "attn":
            return AttentionDecoder(self.num_features, num_classes, self._head_kw["dec_hidden"],
                                    attention=self._head_kw["attention"], dropout=self.dropout)
        raise ValueError(f"head must be 'ctc' or 'attn', got {self.head_kind!r}")

    # -- timm-style interface ---------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """A fresh head for another charset (fine-tuning on new characters); features are kept."""
        self.num_classes = num_classes
        self.head = self._make_head(num_classes)
        if self.aux_ctc is not None:
            self.aux_ctc = CTCHead(self.num_features, num_classes - 2, self.dropout)

    def out_lengths(self, widths: torch.Tensor) -> torch.Tensor:
        """Encoder time steps for input widths (N,), without running the network."""
        return self.backbone.out_lengths(torch.as_tensor(widths, dtype=torch.long))

    @property
    def min_width(self) -> int:
        """Narrowest input (px) that still gives one time step (computed once: it is read on every call)."""
        w = self.__dict__.get("_min_width")
        if w is None:
            w = 1
            while int(self.out_lengths(torch.tensor([w]))[0]) < 1:
                w += 1
            self.__dict__["_min_width"] = w
        return w

    def forward_features(self, x: torch.Tensor, widths: torch.Tensor | None = None):
        """CNN + sequence model: features (N, T, D) and valid steps per line (N,)."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected lines of shape (N, {self.in_chans}, {self.height}, W), got "
                             f"{tuple(x.shape)}: convert images to grayscale and add batch/channel axes")
        if widths is not None:
            widths = torch.as_tensor(widths, dtype=torch.long, device=x.device)
            if widths.shape != (x.shape[0],) or bool((widths < 1).any()) or bool((widths > x.shape[-1]).any()):
                raise ValueError(f"widths must be (N,) = ({x.shape[0]},) values in 1..{x.shape[-1]}, got "
                                 f"{widths.tolist()}")
        if x.shape[-1] < self.min_width:
            raise ValueError(f"lines must be at least {self.min_width} px wide, got {x.shape[-1]}")
        f, lengths = self.backbone(x, widths)  # (N, C, H', T)
        n, c, h, t = f.shape
        f = f.permute(0, 3, 1, 2).reshape(n, t, c * h)  # one feature vector per column
        lengths = lengths.clamp(min=1)
        if self.seq is not None:
            f = self.seq(f, lengths)
        return f, lengths

    def forward_head(self, features: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor | None = None):
        if self.head_kind == "ctc":
            return self.head(features), lengths
        if targets is not None:
            logits = self.head(features, lengths, targets)
            out = (logits, (targets != self.head.pad_id).sum(1))
            if self.aux_ctc is not None:
                out = (*out, (self.aux_ctc(features), lengths))
            return out
        logits = self.head(features, lengths, None, self.max_length)
        limits = default_max_length(lengths)
        if self.max_length is not None:
            limits = limits.clamp(max=self.max_length)
        ended = logits.argmax(-1) == self.head.end_id  # (N, S)
        first = torch.where(ended.any(1), ended.float().argmax(1) + 1, logits.shape[1])
        return logits, torch.minimum(first, limits)

    def forward(self, x: torch.Tensor, widths: torch.Tensor | None = None, targets: torch.Tensor | None = None):
        features, lengths = self.forward_features(x, widths)
        return self.forward_head(features, lengths, targets)


# crnn's CPU-sized encoder, shared by attn: quarter-width VGG with a strided stem, one 64-unit BiLSTM layer
_CPU_ENCODER = {"backbone": "vgg", "width": 16, "stem_stride": 2, "hidden": 64, "seq_layers": 1}


def _create(defaults: dict, kwargs: dict) -> Recognizer:
    return Recognizer(**{**defaults, **kwargs})


# -- presets: one short function each; the name says what changed ----------------------------------

@register_model("recognizer")
def recognizer(**kwargs) -> Recognizer:
    """The base model with every stage chosen by keyword (see :class:`Recognizer`)."""
    return Recognizer(**kwargs)


@register_model("crnn")
def crnn(**kwargs) -> Recognizer:
    """Vanilla CNN -> BiLSTM -> CTC (CRNN) sized for CPUs: VGG stack at a quarter of the original widths
    (16..128 channels) with a strided stem, one BiLSTM layer of 64 per direction (0.6 M parameters)."""
    return _create({**_CPU_ENCODER, "head": "ctc"}, kwargs)


@register_model("crnn_small")
def crnn_small(**kwargs) -> Recognizer:
    """``crnn`` without the strided stem (a max pool after a full-resolution conv): tests, quick experiments."""
    return _create({"backbone": "vgg", "width": 16, "hidden": 64, "seq_layers": 1, "head": "ctc"}, kwargs)


@register_model("crnn_medium")
def crnn_medium(**kwargs) -> Recognizer:
    """CRNN at half the original widths (32..256 channels), 2 x 128 BiLSTM: a middle size for GPUs."""
    return _create({"backbone": "vgg", "width": 32, "hidden": 128, "seq_layers": 2, "head": "ctc"}, kwargs)


@register_model("crnn_large")
def crnn_large(**kwargs) -> Recognizer:
    """CRNN with the original widths (64..512 channels, 2 x 256 BiLSTM; Shi et al. 2017)."""
    return _create({"backbone": "vgg", "width": 64, "hidden": 256, "seq_layers": 2, "head": "ctc"}, kwargs)


@register_model("crnn_resnet")
def crnn_resnet(**kwargs) -> Recognizer:
    """ResNet features instead of the VGG stack, BiLSTM, CTC."""
    return _create({"backbone": "resnet", "width": 32, "depths": (1, 2, 3, 2), "hidden": 128, "head": "ctc"},
                   kwargs)


@register_model("attn")
def attn(**kwargs) -> Recognizer:
    """The improved recognizer at ``crnn``'s CPU size: the same encoder, a Bahdanau attention decoder
    (LSTM 128), trained jointly with a CTC head on the encoder (``aux_ctc``; Kim et al. 2017 report faster
    convergence and monotonic alignments from it)."""
    return _create({**_CPU_ENCODER, "head": "attn", "attention": "bahdanau", "dec_hidden": 128, "aux_ctc": True,
                    "num_classes": 98}, kwargs)


@register_model("attn_resnet")
def attn_resnet(**kwargs) -> Recognizer:
    """ResNet -> BiLSTM encoder -> Bahdanau attention decoder (Baek et al. 2019, slimmed): for GPUs."""
    return _create({"backbone": "resnet", "width": 32, "depths": (1, 2, 3, 2), "hidden": 128,
                    "head": "attn", "attention": "bahdanau", "dec_hidden": 256, "aux_ctc": True,
                    "num_classes": 98}, kwargs)


@register_model("attn_small")
def attn_small(**kwargs) -> Recognizer:
    """Attention recognizer on the quarter-width VGG stack: tests and digit strings."""
    return _create({"backbone": "vgg", "width": 16, "hidden": 64, "seq_layers": 1, "head": "attn",
                    "dec_hidden": 128, "num_classes": 98}, kwargs)


@register_model("attn_luong")
def attn_luong(**kwargs) -> Recognizer:
    """Like ``attn_small`` at CRNN width, with Luong (multiplicative) attention."""
    return _create({"backbone": "vgg", "width": 32, "hidden": 128, "head": "attn", "attention": "luong",
                    "dec_hidden": 256, "num_classes": 98}, kwargs)
