"""YOLO-style text-line detector: a one-stage, anchor-free network read at stride 8 over an FPN.

**Head: anchor-free (FCOS / YOLOX style), not YOLOv3 anchors.** Handwritten text lines are long and
thin: 10:1 to 40:1 boxes, 15-60 px high and up to a page wide. YOLOv3 matches targets to a few
anchor shapes by IoU; a 30:1 line has a low IoU with any anchor of reasonable shape, so it is
assigned to an anchor whose width prior is far too short, and users see narrowed lines (the box
stops mid-line) or lines missed altogether. Here every grid point inside a line predicts its four
distances to the line's edges (left, top, right, bottom), so any aspect ratio is expressed exactly
and a long line has many positive points along its length (Tian et al. 2019, FCOS; Ge et al. 2021,
YOLOX).

**One output level at stride 8, fed by a top-down FPN.** Multi-level FCOS assigns a box to a level
by its largest distance; a long line would go to stride 32, where a 15 px high line may contain no
grid point at all (the other way lines get missed). Lines vary little in height but a lot in
width, so the network reads one fine level (enough rows on a thin line) whose features come from
stride 32 through the FPN (enough context to see both ends of a long line), plus a cheap horizontal
context block (a wide 1 x k depthwise conv) at stride 32 that spreads evidence along rows.

The model is a plain ``nn.Module``: ``forward(x)`` maps pages ``(N, 1, S, S)`` (ink bright, S a
multiple of 32) to raw outputs ``(N, 5, S/8, S/8)``: channel 0 the objectness logit, channels 1-4 the
log of the left/top/right/bottom distances in units of the stride. Decoding, the loss, NMS and
letterboxing live in :mod:`dawnet.ocr.detection` (the agent holds learning, not the model).

Presets: ``yolo`` (a small backbone for CPUs, ~1 M parameters) and ``yolo_large`` (GPUs).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from dawnet.ocr.models.blocks import ConvNormAct
from dawnet.registry import register_model

__all__ = ["YOLO", "yolo", "yolo_large", "yolo_cfgs"]

# Benchmark metadata beside each preset: what the benchmark and CLI read instead of flags.
_BASE_CFG = {
    "size": 640,
    "in_chans": 1,
    "stride": 8,
    "normalize": "ink=1, paper=0 (inverted grayscale in [0, 1])",
    "head": "anchor-free (FCOS/YOLOX-style ltrb distances)",
    "weights": None,
    "license": "MIT",
    "origin": "dawnet",
}
yolo_cfgs: dict[str, dict] = {
    "yolo": {**_BASE_CFG, "device": "cpu", "paper": "YOLOX / FCOS anchor-free head, small CSP-free backbone"},
    "yolo_large": {**_BASE_CFG, "device": "gpu", "paper": "YOLOX / FCOS anchor-free head, wider, deeper"},
}


class _Residual(nn.Module):
    """Two 3x3 conv-BN-SiLU with an identity shortcut (YOLO bottleneck without the 1x1 squeeze)."""

    def __init__(self, chs: int):
        super().__init__()
        self.conv1 = ConvNormAct(chs, chs, 3, act_layer="silu")
        self.conv2 = ConvNormAct(chs, chs, 3, act_layer="silu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(self.conv1(x))


class _RowContext(nn.Module):
    """Spreads evidence along rows (a text line is a row): depthwise ``1 x k`` conv, 1x1 mix, residual."""

    def __init__(self, chs: int, k: int = 9):
        super().__init__()
        self.dw = nn.Conv2d(chs, chs, (1, k), padding=(0, k // 2), groups=chs, bias=False)
        self.pw = ConvNormAct(chs, chs, 1, act_layer="silu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.pw(self.dw(x))


class YOLO(nn.Module):
    """Anchor-free one-stage text-line detector (see the module docstring for the design).

    Args:
        in_chans (1): input channels (grayscale pages).
        widths ((16, 24, 48, 96, 128)): channels of the stem (stride 2) and the four stages (strides 4-32).
        depths ((0, 1, 2, 1)): residual blocks per stage.
        fpn (48): FPN and head channels.
        row_kernel (9): width of the horizontal context kernel at stride 32 (0: none).
        size (640): the square input size the model is meant for (letterbox target; any multiple of 32 runs).
        prior (0.01): initial objectness probability (the focal-loss prior of RetinaNet).
    """

    stride = 8

    def __init__(
        self,
        in_chans: int = 1,
        widths=(16, 24, 48, 96, 128),
        depths=(0, 1, 2, 1),
        fpn: int = 48,
        row_kernel: int = 9,
        size: int = 640,
        prior: float = 0.01,
    ):
        super().__init__()
        widths, depths = tuple(int(w) for w in widths), tuple(int(d) for d in depths)
        if len(widths) != 5 or len(depths) != 4:
            raise ValueError(
                f"widths needs 5 values (stem + 4 stages) and depths 4, got {widths} and {depths}"
            )
        if size % 32:
            raise ValueError(f"size must be a multiple of 32 (the network's total stride), got {size}")
        self.in_chans, self.size, self.num_classes = in_chans, size, 1
        self.stem = ConvNormAct(in_chans, widths[0], 3, stride=2, act_layer="silu")
        self.stages = nn.ModuleList()
        for i in range(4):
            blocks = [ConvNormAct(widths[i], widths[i + 1], 3, stride=2, act_layer="silu")]
            blocks += [_Residual(widths[i + 1]) for _ in range(depths[i])]
            self.stages.append(nn.Sequential(*blocks))
        self.context = _RowContext(widths[4], row_kernel) if row_kernel else nn.Identity()
        self.lateral = nn.ModuleList(
            [ConvNormAct(w, fpn, 1, act_layer="silu") for w in widths[2:]]
        )  # s8, s16, s32
        self.smooth = nn.ModuleList([ConvNormAct(fpn, fpn, 3, act_layer="silu") for _ in range(2)])
        self.head = nn.Sequential(
            ConvNormAct(fpn, fpn, 3, act_layer="silu"), ConvNormAct(fpn, fpn, 3, act_layer="silu")
        )
        self.obj = nn.Conv2d(fpn, 1, 1)
        self.box = nn.Conv2d(fpn, 4, 1)
        nn.init.constant_(self.obj.bias, -math.log((1 - prior) / prior))
        nn.init.normal_(self.box.weight, std=0.01)
        nn.init.constant_(self.box.bias, math.log(2.0))  # start at boxes 4 strides wide and high
        self.feature_info = [
            {"num_chs": widths[i + 1], "reduction": 2 ** (i + 2), "module": f"stages.{i}"} for i in range(4)
        ]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Backbone + FPN: features ``(N, fpn, S/8, S/8)``."""
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected pages of shape (N, {self.in_chans}, S, S), got {tuple(x.shape)}: convert "
                "to grayscale, letterbox (dawnet.ocr.detection.letterbox) and add a batch axis"
            )
        if x.shape[-1] % 32 or x.shape[-2] % 32:
            raise ValueError(
                f"page height and width must be multiples of 32, got {tuple(x.shape[-2:])}; "
                "letterbox pages to a square of side 32*k (e.g. 640)"
            )
        feats = []
        y = self.stem(x)
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        c3, c4, c5 = feats[1], feats[2], self.context(feats[3])
        p5 = self.lateral[2](c5)
        p4 = self.smooth[1](self.lateral[1](c4) + F.interpolate(p5, size=c4.shape[-2:], mode="nearest"))
        p3 = self.smooth[0](self.lateral[0](c3) + F.interpolate(p4, size=c3.shape[-2:], mode="nearest"))
        return p3

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        h = self.head(features)
        return torch.cat([self.obj(h), self.box(h)], dim=1)  # (N, 5, S/8, S/8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model("yolo")
def yolo(**kwargs) -> YOLO:
    """The CPU detector: widths 16-128, FPN 48 (about 0.95 M parameters, 3.3 GFLOPs at 640 x 640)."""
    return YOLO(**{"widths": (16, 24, 48, 96, 128), "depths": (0, 1, 2, 1), "fpn": 48, **kwargs})


@register_model("yolo_large")
def yolo_large(**kwargs) -> YOLO:
    """The GPU detector: widths 32-384, deeper stages, FPN 128 (about 11.6 M parameters, 37 GFLOPs at 640)."""
    return YOLO(**{"widths": (32, 64, 128, 256, 384), "depths": (1, 2, 3, 2), "fpn": 128, **kwargs})
