"""The CUDA paths in one short run, for a GPU machine: FLOPs formulas of CUDA kernels, AMP training,
and the benchmark's ``full`` profile on a small slice of data (its code path and its speed).

1. **FLOPs.** ``dawnet.cost.count`` (forward + backward) of the same modules on the CPU and on the GPU:
   cuDNN's RNN kernels (``_cudnn_rnn``, fused LSTM/GRU cells) and each CUDA attention backend (flash,
   memory-efficient, cuDNN, math) must give the CPU's exact counts, with no unknown ops, where both run
   the same kind of kernel (``EXPECT`` says where they cannot). torch's own ``FlopCounterMode`` is printed
   beside them; it counts FLOPs (2 per MAC), and has no formula for cuDNN's RNNs (it reports 0).
2. **AMP.** crnn and attn for ``--amp-steps`` steps on one fixed batch with ``amp="bf16"`` and
   ``amp="fp16"`` (GradScaler), the detector with fp16: losses stay finite and fall.
3. **Full profile.** ``run_bench`` with the ``full`` profile's models, batches, augmentation, loader
   workers, beam and detector, on a slice of data and a few hundred steps; seconds per step are scaled to
   the full profile's steps (the warm-up is included, so the estimate errs long).

Run it on the GPU machine (fonts and fortunes must be installed there, as for ``dawnet data build``)::

    python3 benchmarks/gpu_check.py --out runs/gpu-check     # writes gpu_check.json and the bench report

On a CPU-only machine it runs the same code on the CPU, with tiny sizes (``--smoke``), to check the script.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn


def _on(device: torch.device, model: nn.Module, inputs: tuple, dtype: torch.dtype | None = None):
    """The model and its inputs on ``device`` (floating tensors in ``dtype`` when one is given)."""
    def move(x):
        return x.to(device, dtype) if dtype is not None and x.is_floating_point() else x.to(device)

    return (model.to(device, dtype) if dtype is not None else model.to(device)), tuple(
        move(x) if torch.is_tensor(x) else x for x in inputs)


def _cost(model: nn.Module, inputs: tuple) -> dict:
    from dawnet.cost import count

    r = count(model, *inputs, backward=True, warn_unknown=False)
    ops = sorted(set(r.by_operator) | set(r.backward_by_operator))
    return {"macs": r.macs, "backward_macs": r.backward_macs, "unknown": dict(r.unknown_ops), "ops": ops}


def _torch_flops(model: nn.Module, inputs: tuple) -> int | None:
    """torch.utils.flop_counter's forward + backward total, for reference (None where it fails)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with FlopCounterMode(display=False) as m:
            out = model(*inputs)
            outs = [o for o in (out if isinstance(out, tuple) else (out,))
                    if torch.is_tensor(o) and o.is_floating_point()]
            torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
        return int(m.get_total_flops())
    except Exception:  # noqa: BLE001  (a reference only: report it missing)
        return None


class _SDPA(nn.Module):
    """Self-attention through F.scaled_dot_product_attention under one chosen backend (on the CPU: the math
    backend when asked for, else the CPU's own flash kernel)."""

    def __init__(self, backend=None, causal: bool = False):
        super().__init__()
        self.backend, self.causal = backend, causal
        self.proj = nn.Linear(64, 64)

    def forward(self, q, k, v):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        q = self.proj(q)
        if self.backend is None or (q.device.type != "cuda" and self.backend != SDPBackend.MATH):
            return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)
        with sdpa_kernel([self.backend]):
            return F.scaled_dot_product_attention(q, k, v, is_causal=self.causal)


# What the GPU's count must match. "equal": the CPU's count (both devices run the same kind of kernel).
# "2x forward": cuDNN's fused GRU counts data + weight gradients as 2x its forward MACs, while the CPU runs
# GRUs op by op and skips gradients nobody needs. "forward": a padded batch packs the LSTM, which the CPU
# runs op by op (no initial-state gradients) and cuDNN fused: only the forward must agree.
EXPECT = ("equal", "2x forward", "forward")


def flops_cases(charset) -> dict:
    """name -> (module factory, inputs, GPU dtype or None, expectation); the same seeds on both devices."""
    from torch.nn.attention import SDPBackend

    from dawnet.ocr.bench import build_recognizer

    def lines(n=4, w=256, padded=False):
        x = torch.rand(n, 1, 32, w, generator=torch.Generator().manual_seed(0))
        return x, torch.tensor([w, w - 37, w - 90, w // 2][:n] if padded else [w] * n)

    def attn_batch():
        targets = torch.randint(2, charset.num_attn_classes, (4, 12), generator=torch.Generator().manual_seed(1))
        return (*lines(), targets)

    qkv = tuple(torch.randn(2, 4, 128, 64, generator=torch.Generator().manual_seed(i)) for i in range(3))
    cases = {
        "lstm 2x128 bidirectional": (lambda: nn.LSTM(48, 128, 2, bidirectional=True, batch_first=True),
                                     (torch.randn(3, 40, 48),), None, "equal"),
        "gru 1x96": (lambda: nn.GRU(48, 96, 1, batch_first=True), (torch.randn(3, 40, 48),), None, "2x forward"),
        "lstm cell": (lambda: nn.LSTMCell(48, 64), (torch.randn(5, 48),), None, "equal"),
        "crnn": (lambda: build_recognizer("crnn", charset), lines(), None, "equal"),
        "crnn padded batch": (lambda: build_recognizer("crnn", charset), lines(padded=True), None, "forward"),
        "crnn_medium": (lambda: build_recognizer("crnn_medium", charset), lines(), None, "equal"),
        "attn (teacher forcing)": (lambda: build_recognizer("attn", charset), attn_batch(), None, "equal"),
    }
    for name, backend in (("flash", SDPBackend.FLASH_ATTENTION), ("efficient", SDPBackend.EFFICIENT_ATTENTION),
                          ("cudnn", SDPBackend.CUDNN_ATTENTION), ("math", SDPBackend.MATH)):
        for causal in (False, True):
            cases[f"sdpa {name}{' causal' if causal else ''}"] = (
                lambda b=backend, c=causal: _SDPA(b, c), qkv, torch.float16, "equal")
    return cases


def _agrees(expect: str, cpu: dict, gpu: dict) -> bool:
    if gpu["unknown"] or gpu["macs"] != cpu["macs"]:
        return False
    if expect == "equal":
        return gpu["backward_macs"] == cpu["backward_macs"]
    if expect == "2x forward":
        return gpu["backward_macs"] == 2 * gpu["macs"]
    return True


def check_flops(device: torch.device, charset) -> list[dict]:
    rows = []
    for name, (make, inputs, dtype, expect) in flops_cases(charset).items():
        torch.manual_seed(0)
        cpu = _cost(*_on(torch.device("cpu"), make(), inputs))
        row = {"case": name, "expect": expect, "cpu_macs": cpu["macs"], "cpu_backward_macs": cpu["backward_macs"],
               "cpu_unknown": cpu["unknown"]}
        if device.type == "cuda":
            torch.manual_seed(0)
            try:
                gpu = _cost(*_on(device, make(), inputs, dtype))
                row.update(gpu_macs=gpu["macs"], gpu_backward_macs=gpu["backward_macs"], gpu_unknown=gpu["unknown"],
                           gpu_ops=[o for o in gpu["ops"] if any(k in o for k in ("rnn", "lstm", "gru", "attention"))],
                           agrees=_agrees(expect, cpu, gpu))
            except RuntimeError as e:  # a backend this GPU or these shapes do not support
                row.update(error=str(e).splitlines()[0][:200])
            torch.manual_seed(0)
            row["torch_flop_counter"] = _torch_flops(*_on(device, make(), inputs, dtype))
        rows.append(row)
        print(f"[flops] {json.dumps(row)}", flush=True)
    return rows


def _first_batch(data: dict, charset, batch: int):
    from dawnet.ocr.bench import line_loader

    return next(iter(line_loader(data, 32, charset, batch, augment=False, seed=0)))


def check_amp(device: torch.device, data: dict, charset, steps: int) -> list[dict]:
    from dawnet.ocr.agents import recognizer_agent
    from dawnet.ocr.bench import build_recognizer

    batch = _first_batch(data, charset, 32)
    rows = []
    modes = ("bf16", "fp16") if device.type == "cuda" else ("bf16",)
    for name in ("crnn", "attn"):
        for amp in modes:
            torch.manual_seed(0)
            model = build_recognizer(name, charset)
            opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
            agent = recognizer_agent(model, opt, charset, amp=amp, grad_clip=5.0, device=device)
            row = _fit_row(agent, batch, steps, name, amp)
            row["falls"] = row["finite"] and row["last_loss"] < 0.5 * row["first_loss"]
            rows.append(row)
            print(f"[amp] {json.dumps(row)}", flush=True)
    rows.append(_detector_amp(device, data, "fp16" if device.type == "cuda" else "bf16", max(10, steps // 3)))
    print(f"[amp] {json.dumps(rows[-1])}", flush=True)
    return rows


def _fit_row(agent, batch, steps: int, name: str, amp: str) -> dict:
    """Train ``agent`` for ``steps`` steps on one fixed batch; its first and last losses."""
    t = time.perf_counter()
    agent.fit([batch] * steps, steps=steps, progress=False)
    losses = [float(v) for v in agent.history.series("loss")[1]]
    return {"model": name, "amp": amp, "steps": agent.step, "first_loss": losses[0], "last_loss": losses[-1],
            "finite": all(math.isfinite(v) for v in losses), "seconds": time.perf_counter() - t,
            "grad_scale": agent._scaler.get_scale() if agent._scaler is not None else None}


def _detector_amp(device, data, amp: str, steps: int) -> dict:
    import dawnet.ocr.models.yolo  # noqa: F401
    from dawnet.ocr.detection import DetectionAgent, DetectionDataset, detection_loader
    from dawnet.registry import create_model

    torch.manual_seed(0)
    ds = DetectionDataset(Path(data["pages-v1"]["path"]) / "train" / "coco.json", 384)
    batch = next(iter(detection_loader(ds, min(8, len(ds)), shuffle=False)))
    model = create_model("yolo", size=384)
    agent = DetectionAgent(model, torch.optim.AdamW(model.parameters(), lr=2e-3), size=384, grad_clip=10.0,
                           device=device, amp=amp)
    row = _fit_row(agent, batch, steps, "yolo", amp)
    row["falls"] = row["finite"] and row["last_loss"] < row["first_loss"]
    return row


def slice_profile(smoke: bool):
    """The ``full`` profile on a slice of the data and a few hundred steps (``smoke``: tiny, on the CPU)."""
    from dawnet.ocr.bench import PROFILES

    full = PROFILES["full"]
    if smoke:
        sizes = dict(lines={"train": 64, "val": 0, "test": 8}, digits={"train": 32, "val": 0, "test": 4},
                     pages={"train": 6, "val": 0, "test": 2}, seen_lines=4, rec_steps=4, det_steps=3, eval_pages=2,
                     latency_repeats=1, loader_workers=0, device="cpu")
    else:
        sizes = dict(lines={"train": 3000, "val": 0, "test": 100}, digits={"train": 1000, "val": 0, "test": 50},
                     pages={"train": 120, "val": 0, "test": 20}, seen_lines=100, rec_steps=600, det_steps=150,
                     eval_pages=10, latency_repeats=10)
    return dataclasses.replace(full, name="gpucheck", description="full-profile slice (benchmarks/gpu_check.py)",
                               **sizes)


def check_full_profile(prof, out: Path, data_dir: Path) -> dict:
    from dawnet.ocr.bench import PROFILES, run_bench

    full = PROFILES["full"]
    t = time.perf_counter()
    res = run_bench(prof, out=out / "bench", data_dir=data_dir, progress=True)
    summary = {"profile": dataclasses.asdict(prof), "seconds": time.perf_counter() - t, "device": res["machine"],
               "data_build_seconds": {k: v.get("build_seconds") for k, v in res["data"].items() if isinstance(v, dict)}}
    est = 0.0
    for name, m in res["models"].items():
        steps = full.det_steps if m["kind"] == "detector" else full.rec_steps
        per_step = m["train_seconds"] / max(1, m["train_steps"])
        summary[name] = {k: m.get(k) for k in ("params", "gflops", "latency_ms_b1", "latency_ms_batch",
                                                 "train_seconds", "train_steps", "train_utilization")}
        summary[name]["seconds_per_step"] = per_step
        summary[name]["full_profile_train_minutes_est"] = per_step * steps / 60
        est += per_step * steps
    summary["full_profile_train_minutes_est"] = est / 60
    summary["recognition"] = [{k: r.get(k) for k in ("model", "decoder", "set", "cer", "wer", "lines", "lines_per_s")}
                              for r in res["recognition"]]
    summary["detection"] = res["detection"]
    keys = ("recognizer", "page_cer", "line_cer_gt_boxes", "pages", "seconds_per_page")
    summary["pipeline"] = [{k: r.get(k) for k in keys} for r in res["pipeline"]]
    print(f"[full] {json.dumps(summary, default=str)}", flush=True)
    return summary


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="runs/gpu-check", help="output folder (gpu_check.json, bench/)")
    p.add_argument("--data-dir", default=None, help="bench data folder (default: OUT/data)")
    p.add_argument("--amp-steps", type=int, default=60, help="steps of each AMP training run (default: 60)")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, to check the script on a CPU")
    p.add_argument("--skip", nargs="*", default=[], choices=["flops", "amp", "full"], help="sections to leave out")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    report: dict = {"torch": torch.__version__, "device": torch.cuda.get_device_name() if device.type == "cuda"
                    else "cpu", "cudnn": torch.backends.cudnn.version() if device.type == "cuda" else None}
    print(f"[env] {json.dumps(report)}", flush=True)

    from dawnet.ocr.data.specs import spec
    from dawnet.ocr.lines import spec_charset

    charset = spec_charset(spec("hw-lines-v1"))

    def save():
        (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))

    from dawnet.ocr.bench import prepare_data

    prof = slice_profile(args.smoke)
    bench_dir = Path(args.data_dir) if args.data_dir else out / "data"
    t = time.perf_counter()
    data = prepare_data(prof, bench_dir)  # built once: the AMP check trains on it, the bench reuses it
    report["data_seconds"] = time.perf_counter() - t
    sections = [
        ("flops", lambda: check_flops(device, charset)),
        ("amp", lambda: check_amp(device, data, charset, args.amp_steps)),
        ("full", lambda: check_full_profile(prof, out, bench_dir)),
    ]
    for name, run in sections:
        if name in args.skip:
            continue
        t = time.perf_counter()
        try:
            report[name] = run()
        except Exception as e:  # noqa: BLE001  (one failing section must not hide the others)
            import traceback

            traceback.print_exc()
            report[name] = {"error": f"{type(e).__name__}: {e}"}
        report[f"{name}_seconds"] = time.perf_counter() - t
        save()
    flops = report.get("flops", [])
    ok = isinstance(flops, list) and all(r.get("agrees", True) for r in flops)
    print(f"[done] GPU FLOPs counts as expected on every case that ran: {ok}; report: {out / 'gpu_check.json'}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
