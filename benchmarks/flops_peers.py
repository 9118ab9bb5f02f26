"""FLOPs counters side by side: each installed peer's MACs over the hand-derived truth, and dawnet's
counting overhead relative to a plain forward.

    python benchmarks/flops_peers.py [--repeats 10]

Peers (the ``bench`` extra): fvcore, ptflops (pytorch and aten backends), thop, and torch's own
``torch.utils.flop_counter.FlopCounterMode``. Every model runs in eval mode under no_grad with
batch 1 (ptflops builds batch-1 inputs). A ratio of 1.000 is exact; a peer that raises reads "error",
one that is not installed "n/a". Each peer gets its own deep copy (some peers modify the model).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import statistics
import time
import warnings

import torch
from torch import nn
from tqdm import tqdm

from dawnet.cost import count, peak_flops, utilization

# -- reference models and their hand-derived MACs ---------------------------------------------


class CRNN(nn.Module):
    """conv/pool stack with (2,1) pooling -> BiLSTM -> Linear, on 1 x 32 x W line images."""

    def __init__(self, classes: int = 80, hidden: int = 128):
        super().__init__()
        c, pools = [1, 32, 64, 128, 128], [(2, 2), (2, 2), (2, 1), (2, 1)]
        layers = []
        for cin, cout, pool in zip(c[:-1], c[1:], pools):
            layers += [nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(pool)]
        self.features = nn.Sequential(*layers)
        self.rnn = nn.LSTM(128 * 2, hidden, bidirectional=True, batch_first=True)
        self.head = nn.Linear(2 * hidden, classes)

    def forward(self, x):
        f = self.features(x).flatten(1, 2).transpose(1, 2)  # (N, W/4, 256)
        return self.head(self.rnn(f)[0])


def crnn_macs(n, w, classes=80, hidden=128):
    c = [1, 32, 64, 128, 128]
    sizes = [(32, w), (16, w // 2), (8, w // 4), (4, w // 4)]
    conv = sum(n * co * ci * 9 * h * ww for ci, co, (h, ww) in zip(c[:-1], c[1:], sizes))
    T = w // 4
    return conv + 2 * n * T * 4 * hidden * (256 + hidden) + n * T * 2 * hidden * classes


class ConvBNAct(nn.Sequential):
    def __init__(self, cin, cout, k=3, s=1):
        super().__init__(nn.Conv2d(cin, cout, k, s, k // 2, bias=False), nn.BatchNorm2d(cout), nn.SiLU())


class TinyYOLO(nn.Module):
    """Stride-2 backbone, an upsample + concat neck and 1x1 detection heads at strides 8 and 16."""

    def __init__(self, out: int = 18):
        super().__init__()
        self.b1 = nn.Sequential(ConvBNAct(3, 16, 3, 2), ConvBNAct(16, 32, 3, 2), ConvBNAct(32, 64, 3, 2))
        self.b2 = ConvBNAct(64, 128, 3, 2)
        self.lateral = ConvBNAct(128, 64, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse = ConvBNAct(128, 64, 3)
        self.head8, self.head16 = nn.Conv2d(64, out, 1), nn.Conv2d(128, out, 1)

    def forward(self, x):
        p8 = self.b1(x)
        p16 = self.b2(p8)
        return self.head8(self.fuse(torch.cat([p8, self.up(self.lateral(p16))], 1))), self.head16(p16)


def yolo_macs(n, h, w, out=18):
    s = [(h // d) * (w // d) for d in (2, 4, 8, 16)]
    return n * (16 * 3 * 9 * s[0] + 32 * 16 * 9 * s[1] + 64 * 32 * 9 * s[2] + 128 * 64 * 9 * s[3]
                + 64 * 128 * s[3] + 64 * 128 * 9 * s[2] + out * 64 * s[2] + out * 128 * s[3])


class Encoder(nn.Module):
    """A transformer encoder layer (eval + no_grad: PyTorch's fused fast path)."""

    def __init__(self, d=64, heads=4, ff=256):
        super().__init__()
        self.layer = nn.TransformerEncoderLayer(d, heads, ff, batch_first=True)

    def forward(self, x):
        return self.layer(x)


def encoder_macs(n, L, d=64, ff=256):
    return n * (4 * L * d * d + 2 * L * L * d + 2 * L * d * ff)


class Upsampler(nn.Module):
    """ConvTranspose2d decoder (counted 4x too high by some tools)."""

    def __init__(self):
        super().__init__()
        self.up1 = nn.ConvTranspose2d(32, 16, 4, stride=2, padding=1)
        self.up2 = nn.ConvTranspose2d(16, 8, 4, stride=2, padding=1)

    def forward(self, x):
        return self.up2(torch.relu(self.up1(x)))


def upsampler_macs(n, h, w):
    return n * (32 * 16 * 16 * h * w + 16 * 8 * 16 * (2 * h) * (2 * w))


def reference_models():
    """(name, model, input, hand-derived MACs) for batch 1."""
    return [
        ("CRNN 1x32x256", CRNN(), torch.randn(1, 1, 32, 256), crnn_macs(1, 256)),
        ("YOLO-style 3x128x128", TinyYOLO(), torch.randn(1, 3, 128, 128), yolo_macs(1, 128, 128)),
        ("Encoder layer L=50", Encoder(), torch.randn(1, 50, 64), encoder_macs(1, 50)),
        ("ConvTranspose 32x16x16", Upsampler(), torch.randn(1, 32, 16, 16), upsampler_macs(1, 16, 16)),
    ]


# -- peers: each returns MACs ------------------------------------------------------------------


def _fvcore(model, x):
    from fvcore.nn import FlopCountAnalysis

    a = FlopCountAnalysis(model, x)
    a.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    return a.total()  # fvcore counts one fused multiply-add as one flop


def _ptflops(backend):
    def run(model, x):
        from ptflops import get_model_complexity_info

        macs, _ = get_model_complexity_info(model, tuple(x.shape[1:]), as_strings=False, backend=backend,
                                            print_per_layer_stat=False, verbose=False,
                                            input_constructor=lambda _: {"x": x})
        return macs

    return run


def _thop(model, x):
    from thop import profile

    macs, _ = profile(model, inputs=(x,), verbose=False)
    return macs


def _torch_counter(model, x):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        model(x)
    return counter.get_total_flops() / 2  # torch counts 2 flops per MAC


def _dawnet(model, x):
    return count(model, x).macs


PEERS = [("fvcore", "fvcore", _fvcore), ("ptflops-pytorch", "ptflops", _ptflops("pytorch")),
         ("ptflops-aten", "ptflops", _ptflops("aten")), ("thop", "thop", _thop),
         ("torch FlopCounterMode", "torch", _torch_counter), ("dawnet", "dawnet", _dawnet)]


def _installed(module: str) -> bool:
    try:
        __import__(module)
        return True
    except ImportError:
        return False


def ratio_table() -> tuple[list[str], list[list[str]]]:
    models = reference_models()
    header = ["model", "truth MACs"] + [name for name, _, _ in PEERS]
    rows = []
    for mname, model, x, truth in tqdm(models, desc="peers", leave=False):
        model.eval()
        row = [mname, f"{truth:,}"]
        for _, module, fn in PEERS:
            if not _installed(module):
                row.append("n/a")
                continue
            try:
                with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
                        contextlib.redirect_stderr(io.StringIO()):
                    warnings.simplefilter("ignore")
                    macs = fn(copy.deepcopy(model), x)
                row.append(f"{macs / truth:.3f}")
            except Exception:  # noqa: BLE001 - a peer that fails is reported, not fatal
                row.append("error")
        rows.append(row)
    return header, rows


def overhead(repeats: int) -> tuple[float, float, float, int]:
    """Median seconds of a plain forward and of count() on the CRNN (batch 8, 1x32x256), their ratio,
    and the forward's FLOPs."""
    model, x = CRNN().eval(), torch.randn(8, 1, 32, 256)
    plain, counted = [], []
    with torch.no_grad():
        for _ in range(3):  # warm-up both
            model(x)
            count(model, x)
        for _ in range(repeats):  # interleaved, so drift hits both alike
            t = time.perf_counter()
            model(x)
            plain.append(time.perf_counter() - t)
            t = time.perf_counter()
            count(model, x)
            counted.append(time.perf_counter() - t)
    p, c = statistics.median(plain), statistics.median(counted)
    with torch.no_grad():
        flops = count(model, x).flops
    return p, c, c / p, flops


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    print(title)
    print("  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths))))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths))))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10,
                        help="Timed repetitions for the overhead measurement (default: 10).")
    args = parser.parse_args(argv)
    header, rows = ratio_table()
    print_table("MACs reported / hand-derived truth (1.000 = exact; eval, no_grad, batch 1)", header, rows)
    p, c, r, flops = overhead(args.repeats)
    peak = peak_flops("cpu", torch.float32)
    print()
    print_table("dawnet counting overhead on the CRNN (batch 8, 1x32x256, eval, no_grad; median)",
                ["plain forward ms", "count() ms", "ratio", "target"],
                [[f"{1e3 * p:.2f}", f"{1e3 * c:.2f}", f"{r:.2f}x", "<= 1.50x"]])
    print()
    print_table("CRNN inference against the CPU's measured matmul peak (fp32, 1024^3 matmuls)",
                ["forward FLOPs", "achieved FLOP/s", "peak FLOP/s", "utilization"],
                [[f"{flops:,}", f"{flops / p:.3e}", f"{peak:.3e}", f"{100 * utilization(flops, p, peak):.1f}%"]])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
