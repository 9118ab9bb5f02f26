"""The benchmark protocol (``dawnet bench``): one fixed, reproducible run that trains the reference models and
measures them side by side, accuracy next to cost, with the protocol written down in the report.

Protocol (every profile):

1. **Data** is built from the versioned specs (``hw-lines-v1``, ``digits-v1``, ``pages-v1``) into a data
   folder and reused when the checksums match. Smaller profiles use a *prefix* of each published split: item
   ``i`` of a split is generated from ``(spec seed, split, i)`` alone, so the cpu profile's 300 test lines are
   exactly the first 300 lines of the full test split. Test fonts are never seen in training.
2. **Recognizers** (the presets ``crnn`` and ``attn``, plus every ``--model``) train on the same lines:
   the training split of ``hw-lines-v1`` plus ``digits-v1`` (the pages hold both kinds of lines), with the
   same optimizer (AdamW, weight decay 1e-4), schedule (super-convergence one-cycle with annihilation),
   gradient clip, batch size, number of optimizer steps and seed: an equal budget of training lines.
3. **The character LM** (``charlm``, Kneser-Ney n-gram) trains on the LM text of ``hw-lines-v1`` (never on
   test lines). Every recognizer is scored greedy, and with beam search + LM shallow fusion on the text lines
   (beam search alone on the digit strings: they are random, and an English LM only hurts them).
4. **The detector** (``yolo``; ``yolo_large`` on GPUs) trains on the ``pages-v1`` training pages.
5. **Test sets**: ``seen`` (training fonts, held-out texts: shows the font gap), ``test`` (unseen fonts),
   ``digits`` (real handwritten MNIST digit strings), ``pages`` (detector mAP; page CER of detect + read,
   next to the recognizer's CER on the true boxes of the same lines).
6. **Cost** beside every accuracy: parameters, GFLOPs per line (median test width) or page (``dawnet.cost``),
   training time, latency at batch 1 and 32 (median of repeats after a warm-up, model + greedy decoding),
   throughput, and training utilization (``3 x forward FLOPs x samples / train time / measured peak``).

Same seed, same machine, same thread count: the accuracy columns reproduce exactly (timings do not).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "Profile",
    "PROFILES",
    "run_bench",
    "compare",
    "format_table",
    "write_report",
    "pareto_front",
    "RECOGNIZERS",
    "DETECTORS",
]

RECOGNIZERS = ("crnn", "attn")  # the reference recognizers every run trains
DETECTORS = {"cpu": "yolo", "gpu": "yolo_large"}
FORMAT = "dawnet.bench"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Profile:
    """Sizes and budgets of one benchmark profile (stated in every report)."""

    name: str
    description: str
    lines: dict  # hw-lines-v1 split sizes (a prefix of the published split); None: the spec's own
    digits: dict
    pages: dict
    seen_lines: int  # seen-font test lines (training fonts, held-out texts)
    rec_steps: int  # optimizer steps per recognizer: the equal budget
    rec_batch: int
    rec_lr: float
    det_steps: int
    det_batch: int
    det_size: int  # letterbox size of the detector
    det_lr: float
    detector: str  # "yolo" (CPU) or "yolo_large" (GPU)
    lm_order: int
    beam: int
    eval_pages: int  # test pages read end to end (detect + recognize)
    latency_repeats: int
    latency_batch: int  # latency is measured at batch 1 and at this batch (32; smaller in smoke)
    augment: bool  # recognizer training lines
    device: str = "cpu"
    lm_weight: float = 0.5
    lm_bonus: float = 1.0
    loader_workers: int = 0  # data loader processes for training (augmentation runs there)
    det_augment: bool = True  # detector training pages (boxes follow the geometric transforms)

    def budget(self) -> str:
        return (
            f"{self.rec_steps} steps x {self.rec_batch} lines per recognizer "
            f"({self.rec_steps * self.rec_batch} training lines each), lr {self.rec_lr:g}; detector "
            f"{self.det_steps} steps x {self.det_batch} pages at {self.det_size} px, lr {self.det_lr:g}"
        )


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="Checks that the whole protocol runs (tests, CI): tiny data, a few steps. "
        "Its numbers mean nothing.",
        lines={"train": 48, "val": 0, "test": 6},
        digits={"train": 32, "val": 0, "test": 4},
        pages={"train": 4, "val": 0, "test": 2},
        seen_lines=4,
        rec_steps=3,
        rec_batch=8,
        rec_lr=1e-3,
        det_steps=3,
        det_batch=2,
        det_size=256,
        det_lr=2e-3,
        detector="yolo",
        lm_order=3,
        beam=3,
        eval_pages=2,
        latency_repeats=1,
        latency_batch=4,
        augment=False,
        det_augment=False,
    ),
    "cpu": Profile(
        name="cpu",
        description="The default: under 20 minutes on 2 free CPU cores. Short training on prefixes of the "
        "published splits with CPU-sized models (crnn, attn: 0.6-0.8 M parameters): far from converged, so "
        "compare the models with each other, not with published numbers. Batches of 16 and no augmentation: at "
        "this budget both learn faster per line (crnn unseen-font CER after 19,200 lines: 63.3% with "
        "augmentation, 54.7% without at batch 32, 44.9% at batch 12).",
        lines={"train": 4000, "val": 0, "test": 300},
        digits={"train": 2000, "val": 0, "test": 200},
        pages={"train": 300, "val": 0, "test": 40},
        seen_lines=150,
        rec_steps=700,
        rec_batch=16,
        rec_lr=2e-3,
        det_steps=500,
        det_batch=8,
        det_size=384,
        det_lr=3e-3,
        detector="yolo",
        lm_order=6,
        beam=6,
        eval_pages=30,
        latency_repeats=5,
        latency_batch=32,
        augment=False,
    ),
    "full": Profile(
        name="full",
        description="For GPUs: the published splits in full, long training, the large detector.",
        lines=None,
        digits=None,
        pages=None,
        seen_lines=2000,
        rec_steps=20000,
        rec_batch=64,
        rec_lr=1e-3,
        det_steps=6000,
        det_batch=16,
        det_size=640,
        det_lr=2e-3,
        detector="yolo_large",
        lm_order=6,
        beam=10,
        eval_pages=200,
        latency_repeats=20,
        latency_batch=32,
        augment=True,
        device="auto",
        loader_workers=8,
    ),
}


# -- small utilities ---------------------------------------------------------------------------------------


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _save_figure(fig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    os.replace(tmp, path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _log(progress: bool, msg: str) -> None:
    if progress:
        print(f"[bench] {msg}", flush=True)


def machine_info(device: torch.device) -> dict:
    """The machine a run measured: CPU, cores, threads, load, accelerator."""
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    try:
        info["load_average"] = [round(v, 2) for v in os.getloadavg()]
    except OSError:
        info["load_average"] = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        if names:
            info["cpu_model"] = names[0]
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["gpu_count"] = torch.cuda.device_count()
    return info


def library_versions() -> dict:
    import importlib.metadata as md

    import dawnet

    out = {"dawnet": dawnet.__version__, "torch": torch.__version__, "cuda": torch.version.cuda}
    for name in ("numpy", "pillow", "pycocotools", "rapidfuzz", "matplotlib", "mlxtend"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = None
    return out


# -- data --------------------------------------------------------------------------------------------------


def _profile_spec(name: str, sizes: dict | None, profile: Profile):
    from dawnet.ocr.data.specs import spec

    s = spec(name)
    if sizes is None:
        return s
    return dataclasses.replace(s, sizes=dict(sizes), size=f"bench-{profile.name}")


def prepare_data(profile: Profile, data_dir: Path, progress: bool = True, workers: int | None = None) -> dict:
    """Build (or reuse, by checksum) the data sets of ``profile`` under ``data_dir``; returns their info."""
    from dawnet.ocr.data import build

    out = {}
    for name, sizes in (
        ("hw-lines-v1", profile.lines),
        ("digits-v1", profile.digits),
        ("pages-v1", profile.pages),
    ):
        s = _profile_spec(name, sizes, profile)
        folder = data_dir / f"{name}-{s.size}"
        _log(progress, f"data {name} ({', '.join(f'{k} {v}' for k, v in s.sizes.items())}) -> {folder}")
        manifest = build(s, folder, workers=workers, progress=progress)
        out[name] = {
            "path": str(folder),
            "spec": s.name,
            "size": s.size,
            "sizes": dict(s.sizes),
            "spec_digest": s.digest(),
            "manifest_sha256": _sha256(folder / "manifest.json"),
            "build_seconds": manifest.get("build_seconds"),
        }
    return out


class SeenFontLines(torch.utils.data.Dataset):
    """Held-out line texts written in the *training* fonts: the seen-font test set (rendered in memory)."""

    def __init__(self, n: int, height: int, seed_offset: int = 1000):
        from dawnet.ocr.data.generate import SpecGenerator
        from dawnet.ocr.data.specs import spec
        from dawnet.ocr.data.synth import LineSynthesizer

        gen = SpecGenerator(spec("hw-lines-v1"))
        synth = LineSynthesizer(gen.fonts["train"])
        texts = gen.texts("val")
        self.items = []
        for i in range(n):
            rng = np.random.default_rng([gen.spec.seed, seed_offset, i])
            line = synth.render(texts[i % len(texts)], rng)
            self.items.append((line.image, line.text))
        self.height = height
        self.digest = hashlib.sha256(b"".join(im.tobytes() + t.encode() for im, t in self.items)).hexdigest()

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        from dawnet.ocr.charset import normalize
        from dawnet.ocr.data.datasets import to_tensor

        im, text = self.items[i]
        x = to_tensor(im, self.height)
        return {"image": x, "width": x.shape[-1], "text": normalize(text), "source": f"seen/{i}"}


# -- training ----------------------------------------------------------------------------------------------


def _line_loader(data: dict, height: int, charset, batch: int, augment: bool, seed: int, workers: int = 0):
    """Width-bucketed batches of the hw-lines-v1 + digits-v1 training lines (seeded by epoch)."""
    from torch.utils.data import ConcatDataset, DataLoader

    from dawnet.ocr.data.datasets import LineAugment, LineDataset, WidthBucketSampler, collate_lines

    aug = LineAugment() if augment else None
    parts = [
        LineDataset(
            Path(data[n]["path"]) / "train" / "labels.tsv",
            height=height,
            charset=charset,
            augment=aug,
            seed=seed,
        )
        for n in ("hw-lines-v1", "digits-v1")
    ]
    widths = [w for p in parts for w in p.widths()]
    sampler = WidthBucketSampler(widths, batch, shuffle=True, drop_last=True, seed=seed)
    return DataLoader(
        ConcatDataset(parts), batch_sampler=sampler, collate_fn=collate_lines, num_workers=workers
    )


def build_recognizer(name: str, charset, height: int = 32):
    """A recognizer by preset name or ``module:factory``, sized for ``charset`` (CTC or attention head)."""
    import dawnet.ocr.models  # noqa: F401  (registers the presets)
    from dawnet.registry import create_model

    try:
        model = create_model(name, num_classes=charset.num_ctc_classes, height=height)
    except TypeError as e:
        raise ValueError(
            f"--model {name}: its constructor must accept num_classes= and height= (like the "
            f"recognizer presets): {e}"
        ) from None
    kind = getattr(model, "head_kind", None)
    if kind == "attn":
        model = create_model(name, num_classes=charset.num_attn_classes, height=height)
    elif kind != "ctc":
        raise ValueError(
            f"--model {name} builds a {type(model).__name__} without head_kind 'ctc' or 'attn': the "
            "benchmark trains line recognizers (see dawnet.ocr.models.Recognizer)"
        )
    return model


def train_recognizer(name: str, data: dict, charset, profile: Profile, seed: int, device, progress: bool):
    from dawnet.ocr.agents import recognizer_agent
    from dawnet.training.schedules import SuperConvergence

    torch.manual_seed(seed)
    model = build_recognizer(name, charset)
    loader = _line_loader(
        data, model.height, charset, profile.rec_batch, profile.augment, seed, profile.loader_workers
    )
    total = profile.rec_steps
    opt = torch.optim.AdamW(model.parameters(), lr=profile.rec_lr, weight_decay=1e-4)
    step_size = max(1, int(0.45 * total))
    schedule = SuperConvergence(
        opt,
        base_lr=profile.rec_lr / 10,
        max_lr=profile.rec_lr,
        step_size=step_size,
        annihilate_steps=max(0, total - 2 * step_size),
        annihilate_to=profile.rec_lr / 1000,
    )
    agent = recognizer_agent(model, opt, charset, schedule=schedule, grad_clip=5.0, seed=seed, device=device)
    start = time.perf_counter()
    agent.fit(loader, steps=total, progress=progress)
    return agent, time.perf_counter() - start


def train_detector(data: dict, profile: Profile, seed: int, device, progress: bool, iou_aware: bool = True):
    import dawnet.ocr.models.yolo  # noqa: F401  (registers yolo)
    from dawnet.ocr.detection import DetectionAgent, DetectionAugment, DetectionDataset, detection_loader
    from dawnet.registry import create_model
    from dawnet.training.schedules import SuperConvergence

    torch.manual_seed(seed)
    pages = Path(data["pages-v1"]["path"])
    train = DetectionDataset(
        pages / "train" / "coco.json",
        profile.det_size,
        augment=DetectionAugment() if profile.det_augment else None,
        seed=seed,
    )
    model = create_model(profile.detector, size=profile.det_size)
    total = profile.det_steps
    opt = torch.optim.AdamW(model.parameters(), lr=profile.det_lr, weight_decay=1e-4)
    step_size = max(1, int(0.3 * total))
    schedule = SuperConvergence(
        opt,
        base_lr=profile.det_lr / 10,
        max_lr=profile.det_lr,
        step_size=step_size,
        annihilate_steps=max(0, total - 2 * step_size),
        annihilate_to=profile.det_lr / 1000,
    )
    agent = DetectionAgent(
        model, opt, schedule=schedule, size=profile.det_size, grad_clip=10.0, seed=seed, device=device,
        iou_aware=iou_aware,
    )
    loader = detection_loader(
        train, min(profile.det_batch, len(train)), shuffle=True, workers=profile.loader_workers
    )
    start = time.perf_counter()
    agent.fit(loader, steps=total, progress=progress)
    return agent, time.perf_counter() - start


# -- cost --------------------------------------------------------------------------------------------------


def _median_time(fn, repeats: int, device) -> float:
    fn()  # warm-up
    times = []
    for _ in range(max(1, repeats)):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


@torch.no_grad()  # not inference_mode: dawnet.cost.count sees no aten ops under it
def recognizer_cost(agent, width: int, repeats: int, batch: int = 32) -> dict:
    """Params, GFLOPs per line of ``width`` px, latency (model + greedy decoding) at batch 1 and 32."""
    from dawnet.cost import count

    model, dev = agent.model, agent.device
    was = model.training
    model.eval()
    try:
        x = torch.rand(1, 1, agent.height, width, device=dev)
        w = torch.tensor([width], device=dev)
        report = count(model, x, w, warn_unknown=False)
        lat = {}
        for b in (1, batch):
            xb, wb = x.expand(b, -1, -1, -1).contiguous(), w.expand(b).contiguous()
            lat[b] = _median_time(
                lambda xb=xb, wb=wb: agent.decode(model(xb, wb), (xb, wb, True)), repeats, dev
            )
    finally:
        model.train(was)
    return {
        "params": report.params,
        "gflops": report.flops / 1e9,
        "input": f"1x{agent.height}x{width} line",
        "latency_ms_b1": 1000 * lat[1],
        "latency_batch": batch,
        "latency_ms_batch": 1000 * lat[batch],
        "throughput_per_s": batch / lat[batch],
        "unknown_ops": dict(report.unknown_ops),
    }


@torch.no_grad()  # not inference_mode: dawnet.cost.count sees no aten ops under it
def detector_cost(agent, repeats: int, batch: int = 32) -> dict:
    from dawnet.cost import count
    from dawnet.ocr.detection import decode_detections

    model, dev, s = agent.model, agent.device, agent.size
    was = model.training
    model.eval()
    try:
        x = torch.rand(1, 1, s, s, device=dev)
        report = count(model, x, warn_unknown=False)
        lat = {}
        for b in (1, batch):
            xb = x.expand(b, -1, -1, -1).contiguous()
            lat[b] = _median_time(lambda xb=xb: decode_detections(model(xb), agent.stride), repeats, dev)
    finally:
        model.train(was)
    return {
        "params": report.params,
        "gflops": report.flops / 1e9,
        "input": f"1x{s}x{s} page",
        "latency_ms_b1": 1000 * lat[1],
        "latency_batch": batch,
        "latency_ms_batch": 1000 * lat[batch],
        "throughput_per_s": batch / lat[batch],
        "unknown_ops": dict(report.unknown_ops),
    }


def _utilization(gflops: float, samples: int, seconds: float, peak: float | None) -> float | None:
    """Training model-FLOPs utilization with the common ``train = 3 x forward`` convention."""
    if not peak or seconds <= 0:
        return None
    from dawnet.cost import utilization

    return utilization(3 * gflops * 1e9 * samples, seconds, peak)


# -- the run -----------------------------------------------------------------------------------------------


def _test_sets(data: dict, height: int, seen: SeenFontLines):
    from dawnet.ocr.data.datasets import LineDataset

    return {
        "seen": seen,
        "test": LineDataset(Path(data["hw-lines-v1"]["path"]) / "test" / "labels.tsv", height=height),
        "digits": LineDataset(Path(data["digits-v1"]["path"]) / "test" / "labels.tsv", height=height),
    }


def _decoders(prof: Profile, lm) -> list[tuple[str, dict, tuple[str, ...]]]:
    """(label, ``set_decoder`` settings, test sets) per decoder. The LM models English text, so it decodes the
    text lines; digit strings are random (no LM text), so beam search reads them without it."""
    return [
        ("greedy", dict(beam=1, lm_weight=0.0, bonus=0.0), ("seen", "test", "digits")),
        (f"beam{prof.beam}+lm", dict(beam=prof.beam, lm=lm, lm_weight=prof.lm_weight, bonus=prof.lm_bonus),
         ("seen", "test")),
        (f"beam{prof.beam}", dict(beam=prof.beam, lm_weight=0.0, bonus=0.0), ("digits",)),
    ]


def _score(agent, dataset, progress: bool) -> dict:
    from dawnet.commands.eval import evaluate_lines

    r = evaluate_lines(agent, dataset, batch_size=16, progress=progress)
    r.pop("pairs")
    r.pop("normalization", None)
    return r


def run_bench(
    profile: str | Profile = "cpu",
    out: str | os.PathLike = "runs/bench",
    models=(),
    data_dir: str | os.PathLike = "runs/bench-data",
    seed: int = 0,
    progress: bool = True,
    workers: int | None = None,
) -> dict:
    """Run the benchmark protocol (see the module docstring); writes ``out/results.json``, ``report.md``,
    ``models/*.pt`` and ``figures/*.png`` and returns the results."""
    from dawnet.commands.train import lm_texts, spec_charset
    from dawnet.ocr.data.specs import spec
    from dawnet.ocr.lm import CharNgramLM
    from dawnet.ocr.page import evaluate_pages

    prof = PROFILES[profile] if isinstance(profile, str) else profile
    if isinstance(profile, str) and profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    out, data_dir = Path(out), Path(data_dir)
    (out / "models").mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if prof.device == "auto" and torch.cuda.is_available() else "cpu")
    names = list(RECOGNIZERS) + [m for m in models if m not in RECOGNIZERS]
    if len(set(names)) != len(names):
        raise ValueError(f"--model names must be distinct, got {models}")
    t_start = time.perf_counter()
    results: dict = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "profile": asdict(prof),
        "budget": prof.budget(),
        "seed": seed,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": machine_info(device),
        "versions": library_versions(),
        "normalization": None,
        "models": {},
        "recognition": [],
        "detection": [],
        "pipeline": [],
    }
    results["data"] = prepare_data(prof, data_dir, progress, workers)
    charset = spec_charset(spec("hw-lines-v1"))
    seen = SeenFontLines(prof.seen_lines, 32)
    results["data"]["seen-fonts"] = {
        "lines": prof.seen_lines,
        "sha256": seen.digest,
        "what": "hw-lines-v1 val texts in the training fonts, seeds (1, 1000, i)",
    }

    # the character LM (LM text only, never test lines)
    t = time.perf_counter()
    train_text, held, _ = lm_texts("hw-lines-v1", seed)
    lm = CharNgramLM.train(train_text, order=prof.lm_order, vocab=charset.chars)
    lm.save(out / "models" / "charlm.json.gz")
    results["lm"] = {
        "order": prof.lm_order,
        "train_lines": len(train_text),
        "held_out_lines": len(held),
        "held_out_perplexity": lm.perplexity(held) if held else None,
        "seconds": time.perf_counter() - t,
        "path": "models/charlm.json.gz",
    }
    peak = None
    try:
        from dawnet.cost import peak_flops

        peak = peak_flops(device)
    except (RuntimeError, ValueError):
        pass
    results["machine"]["peak_flops"] = peak

    # recognizers: equal budget, every test set, greedy and beam + LM
    agents = {}
    for name in names:
        _log(progress, f"train {name}: {prof.rec_steps} steps x {prof.rec_batch} lines")
        agent, seconds = train_recognizer(name, results["data"], charset, prof, seed, device, progress)
        ckpt = out / "models" / f"{name}.pt"
        agent.save(ckpt)
        agents[name] = agent
        sets = _test_sets(results["data"], agent.height, seen)
        width = int(statistics.median(sets["test"].widths()))
        cost = recognizer_cost(agent, width, prof.latency_repeats, prof.latency_batch)
        samples = prof.rec_steps * prof.rec_batch
        results["models"][name] = {
            "kind": "recognizer",
            "head": agent.model.head_kind,
            **cost,
            "train_seconds": seconds,
            "train_steps": agent.step,
            "batch_size": prof.rec_batch,
            "train_samples": samples,
            "train_utilization": _utilization(cost["gflops"], samples, seconds, peak),
            "checkpoint": f"models/{name}.pt",
        }
        _draw_history(agent, out / "figures" / f"history-{name}.png", name)
        for decoder, settings, set_names in _decoders(prof, lm):
            agent.set_decoder(**settings)
            for set_name in set_names:
                ds = sets[set_name]
                _log(progress, f"score {name} ({decoder}) on {set_name} ({len(ds)} lines)")
                r = _score(agent, ds, progress)
                results["recognition"].append({"model": name, "decoder": decoder, "set": set_name, **r})
        agent.set_decoder(beam=1, lm_weight=0.0, bonus=0.0)
    from dawnet.ocr.metrics import DEFAULT

    results["normalization"] = DEFAULT.describe()

    # the detector, and the pipeline with every recognizer
    _log(
        progress,
        f"train {prof.detector}: {prof.det_steps} steps x {prof.det_batch} pages at {prof.det_size} px",
    )
    det, seconds = train_detector(results["data"], prof, seed, device, progress)
    det.save(out / "models" / "yolo.pt")
    _draw_history(det, out / "figures" / "history-yolo.png", prof.detector)
    cost = detector_cost(det, prof.latency_repeats, prof.latency_batch)
    samples = prof.det_steps * prof.det_batch
    results["models"]["yolo"] = {
        "kind": "detector",
        "preset": prof.detector,
        **cost,
        "train_seconds": seconds,
        "train_steps": det.step,
        "batch_size": prof.det_batch,
        "train_samples": samples,
        "train_utilization": _utilization(cost["gflops"], samples, seconds, peak),
        "checkpoint": "models/yolo.pt",
    }
    from dawnet.ocr.detection import DetectionDataset, detection_loader

    pages = Path(results["data"]["pages-v1"]["path"]) / "test" / "coco.json"
    test_pages = DetectionDataset(pages, prof.det_size)
    _log(progress, f"score the detector on {len(test_pages)} test pages")
    r = det.evaluate(detection_loader(test_pages, 4))
    results["detection"].append(
        {"model": "yolo", "preset": prof.detector, "set": "pages", "pages": len(test_pages), **r}
    )
    for name, agent in agents.items():
        _log(progress, f"read {min(prof.eval_pages, len(test_pages))} pages with yolo + {name}")
        r = evaluate_pages(det, agent, pages, limit=prof.eval_pages, progress=progress)
        results["pipeline"].append({"detector": "yolo", "recognizer": name, "decoder": "greedy", **r})
    results["seconds"] = time.perf_counter() - t_start
    results["machine"]["load_average_end"] = (
        [round(v, 2) for v in os.getloadavg()] if hasattr(os, "getloadavg") else None
    )
    _atomic_write(out / "results.json", json.dumps(_jsonable(results), indent=1))
    draw_figures(results, out / "figures")
    write_report(results, out / "report.md")
    return results


def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (np.floating, np.integer)):
        return _jsonable(obj.item())
    return obj


def _draw_history(agent, path: Path, title: str) -> None:
    from matplotlib import pyplot as plt

    from dawnet.history_plot import draw_history

    if not agent.history.steps:
        return
    fig = draw_history(agent)
    fig.suptitle(f"training: {title}")
    _save_figure(fig, path)
    plt.close(fig)


# -- figures, table, report, compare -----------------------------------------------------------------------


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower is better on both), sorted by x."""
    order = sorted(range(len(points)), key=lambda i: (points[i][0], points[i][1]))
    front, best = [], math.inf
    for i in order:
        if points[i][1] < best:
            front.append(i)
            best = points[i][1]
    return front


def draw_figures(results: dict, folder: Path) -> list[Path]:
    """CER against GFLOPs and against latency (Pareto fronts), one point per recognizer and decoder."""
    from matplotlib.figure import Figure

    rows = [r for r in results["recognition"] if r["set"] == "test"]
    written = []
    for key, label, fname in (
        ("gflops", "GFLOPs per line", "pareto-gflops.png"),
        ("latency_ms_b1", "latency per line, batch 1 (ms)", "pareto-latency.png"),
    ):
        fig = Figure(figsize=(6.4, 4.2))
        ax = fig.subplots()
        pts = [(results["models"][r["model"]][key], 100 * r["cer"]) for r in rows]
        for (x, y), r in zip(pts, rows):
            ax.scatter([x], [y], marker="o" if r["decoder"] == "greedy" else "s")
            ax.annotate(
                f"{r['model']} ({r['decoder']})",
                (x, y),
                textcoords="offset points",
                xytext=(5, 4),
                fontsize=8,
            )
        front = pareto_front(pts)
        if len(front) > 1:
            ax.plot(
                [pts[i][0] for i in front],
                [pts[i][1] for i in front],
                "--",
                color="gray",
                lw=1,
                label="Pareto front",
            )
            ax.legend(fontsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("CER on unseen fonts (%)")
        ax.set_title(f"dawnet bench ({results['profile']['name']}): CER vs {label.split(' (')[0]}")
        ax.grid(alpha=0.3)
        _save_figure(fig, folder / fname)
        written.append(folder / fname)
    return written


def _big(results: dict) -> int:
    return int(results["profile"].get("latency_batch", 32))


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def _num(v, digits=2) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def format_table(results: dict) -> str:
    """One table: every recognizer and decoder (CER per test set), the detector, and the page pipeline."""
    sets = ["seen", "test", "digits"]
    head = (
        ["model", "decoder", "params (M)", "GFLOPs", "ms b1", f"ms b{_big(results)}", "train s"]
        + [f"CER {s}" for s in sets]
        + ["WER test", "word acc test", "1-NED test", "page CER"]
    )
    lines = []
    by = {(r["model"], r["decoder"], r["set"]): r for r in results["recognition"]}
    page = {r["recognizer"]: r for r in results["pipeline"]}
    for model, decoder in dict.fromkeys((r["model"], r["decoder"]) for r in results["recognition"]):
        m = results["models"][model]
        t = by.get((model, decoder, "test"), {})
        row = [
            model,
            decoder,
            f"{m['params'] / 1e6:.2f}",
            f"{m['gflops']:.2f}",
            f"{m['latency_ms_b1']:.1f}",
            f"{m['latency_ms_batch']:.1f}",
            f"{m['train_seconds']:.0f}",
        ]
        row += [_pct(by.get((model, decoder, s), {}).get("cer")) for s in sets]
        row += [
            _pct(t.get("wer")),
            _pct(t.get("word_accuracy")),
            _num(t.get("one_minus_ned"), 4),
            _pct(page[model]["page_cer"]) if decoder == "greedy" and model in page else "-",
        ]
        lines.append(row)
    out = _grid(head, lines)
    det_head = [
        "detector",
        "params (M)",
        "GFLOPs/page",
        "ms b1",
        f"ms b{_big(results)}",
        "train s",
        "mAP@0.5",
        "mAP@0.5:0.95",
        "pages",
    ]
    det_rows = []
    for r in results["detection"]:
        m = results["models"][r["model"]]
        det_rows.append(
            [
                f"{r['model']} ({r['preset']})",
                f"{m['params'] / 1e6:.2f}",
                f"{m['gflops']:.2f}",
                f"{m['latency_ms_b1']:.1f}",
                f"{m['latency_ms_batch']:.1f}",
                f"{m['train_seconds']:.0f}",
                _pct(r["map50"]),
                _pct(r["map"]),
                str(r["pages"]),
            ]
        )
    out += "\n\n" + _grid(det_head, det_rows)
    pipe_head = [
        "pipeline",
        "page CER",
        "page WER",
        "line CER (true boxes)",
        "lines found / true",
        "s per page",
    ]
    pipe_rows = [
        [
            f"{r['detector']} + {r['recognizer']}",
            _pct(r["page_cer"]),
            _pct(r["page_wer"]),
            _pct(r["line_cer_gt_boxes"]),
            f"{r['detected_lines']} / {r['lines']}",
            f"{r['seconds_per_page']:.2f}",
        ]
        for r in results["pipeline"]
    ]
    out += "\n\n" + _grid(pipe_head, pipe_rows)
    return out


def _grid(head: list[str], rows: list[list[str]]) -> str:
    """A Markdown table (it also reads well in a terminal)."""
    widths = [max(len(str(c)) for c in col) for col in zip(head, *rows)] if rows else [len(h) for h in head]
    fmt = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join(
        [fmt(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [fmt(r) for r in rows]
    )


def write_report(results: dict, path: Path) -> Path:
    """``report.md``: protocol, the tables, figures, machine, versions, seeds and data checksums."""
    p = results["profile"]
    m = results["machine"]
    lines = [
        f"# dawnet bench: profile `{p['name']}`",
        "",
        f"{p['description']}",
        "",
        f"Run {results['created']}, {results['seconds'] / 60:.1f} minutes, seed {results['seed']}, device "
        f"{m['device']} ({m.get('gpu') or m.get('cpu_model') or m['processor']}, {m['cpu_count']} CPUs, "
        f"{m['torch_threads']} torch threads, load average {m.get('load_average')} at the start and "
        f"{m.get('load_average_end')} at the end).",
        "",
        "## Protocol",
        "",
        f"- Budget (equal for every recognizer): {results['budget']}.",
        "- Recognizers train on the hw-lines-v1 + digits-v1 training lines (AdamW, weight decay 1e-4, "
        "super-convergence one-cycle, gradient clip 5"
        + (", line augmentation" if p["augment"] else "")
        + "); no model selection on test data.",
        f"- Decoders: greedy, and beam {p['beam']} with the character {results['lm']['order']}-gram LM "
        f"(weight {p['lm_weight']}, bonus {p['lm_bonus']} per character; trained on "
        f"{results['lm']['train_lines']} LM lines, held-out perplexity "
        f"{_num(results['lm']['held_out_perplexity'])}) on the text lines; beam {p['beam']} without it on the "
        "digit strings, which are random (an English LM only hurts them).",
        "- Test sets: `seen` = held-out texts in the training fonts; `test` = hw-lines-v1 test split (unseen "
        "fonts); `digits` = digits-v1 test split (real MNIST digits); pages = pages-v1 test split.",
        f"- Text normalization: {results['normalization']}. CER/WER are corpus-level (edits / reference "
        "length); page CER joins each page's lines in reading order.",
        "- GFLOPs: one forward pass (2 FLOPs per multiply-add, `dawnet.cost.count`) of one line of the "
        "median test width, or one letterboxed page. Latency: median wall time of model + greedy decoding "
        "(detector: + NMS) after a warm-up. Training utilization: 3 x forward FLOPs x training samples / "
        f"training time / measured peak ({_num((m.get('peak_flops') or 0) / 1e9, 1)} GFLOP/s matmul).",
        "",
        "## Results",
        "",
        format_table(results),
        "",
        "![CER vs GFLOPs](figures/pareto-gflops.png) ![CER vs latency](figures/pareto-latency.png)",
        "",
        "Training curves: " + ", ".join(f"[{n}](figures/history-{n}.png)" for n in results["models"]),
        "",
        "## Cost and training",
        "",
        _grid(
            [
                "model",
                "input",
                "params",
                "GFLOPs",
                "ms b1",
                f"ms b{_big(results)}",
                "throughput /s",
                "train steps",
                "train s",
                "utilization",
            ],
            [
                [
                    n,
                    v["input"],
                    str(v["params"]),
                    f"{v['gflops']:.3f}",
                    f"{v['latency_ms_b1']:.1f}",
                    f"{v['latency_ms_batch']:.1f}",
                    f"{v['throughput_per_s']:.1f}",
                    str(v["train_steps"]),
                    f"{v['train_seconds']:.0f}",
                    _pct(v["train_utilization"]) + " %",
                ]
                for n, v in results["models"].items()
            ],
        ),
        "",
        "## Data",
        "",
        _grid(
            ["data", "spec digest", "sizes", "manifest sha256"],
            [
                [
                    n,
                    d.get("spec_digest", "-"),
                    json.dumps(d.get("sizes", d.get("lines"))),
                    d.get("manifest_sha256", d.get("sha256", "-"))[:16],
                ]
                for n, d in results["data"].items()
            ],
        ),
        "",
        "## Versions",
        "",
        ", ".join(f"{k} {v}" for k, v in results["versions"].items()),
        "",
    ]
    _atomic_write(path, "\n".join(lines))
    return path


def _rows_by_key(results: dict) -> dict:
    out = {}
    for r in results.get("recognition", []):
        for k in ("cer", "wer", "word_accuracy", "one_minus_ned"):
            out[(f"{r['model']} ({r['decoder']})", f"{k} {r['set']}")] = r.get(k)
    for r in results.get("detection", []):
        out[(f"{r['model']} ({r.get('preset', '')})", "mAP@0.5 pages")] = r.get("map50")
        out[(f"{r['model']} ({r.get('preset', '')})", "mAP@0.5:0.95 pages")] = r.get("map")
    for r in results.get("pipeline", []):
        out[(f"{r['detector']} + {r['recognizer']}", "page CER")] = r.get("page_cer")
    for name, m in results.get("models", {}).items():
        out[(name, "GFLOPs")] = m.get("gflops")
        out[(name, "latency ms b1")] = m.get("latency_ms_b1")
        out[(name, "train s")] = m.get("train_seconds")
    return out


def _value(v, pct: bool) -> str:
    return "-" if v is None else (f"{100 * v:.2f}" if pct else f"{v:.3f}")


def compare(a: dict, b: dict, names: tuple[str, str] = ("A", "B")) -> str:
    """Two runs side by side: every shared metric with both values and the difference, then the protocol
    differences (profile, data checksums, machine) that make a comparison unfair."""
    for r in (a, b):
        if r.get("format") != FORMAT:
            raise ValueError("not a dawnet bench results.json (no 'format': 'dawnet.bench')")
    ra, rb = _rows_by_key(a), _rows_by_key(b)
    rows = []
    for key in list(dict.fromkeys(list(ra) + list(rb))):
        va, vb = ra.get(key), rb.get(key)
        pct = not any(w in key[1] for w in ("GFLOPs", "ms", "train s", "NED"))
        d = "-" if va is None or vb is None else (f"{100 * (vb - va):+.2f}" if pct else f"{vb - va:+.3f}")
        rows.append([key[0], key[1] + (" (%)" if pct else ""), _value(va, pct), _value(vb, pct), d])
    out = _grid(["model", "metric", names[0], names[1], "B - A"], rows)
    notes = []
    if a["profile"] != b["profile"]:
        notes.append(f"different profiles: {a['profile']['name']} vs {b['profile']['name']}")
    for d in set(a.get("data", {})) | set(b.get("data", {})):
        ca = a.get("data", {}).get(d, {}).get("spec_digest") or a.get("data", {}).get(d, {}).get("sha256")
        cb = b.get("data", {}).get(d, {}).get("spec_digest") or b.get("data", {}).get(d, {}).get("sha256")
        if ca != cb:
            notes.append(f"data {d} differs ({ca} vs {cb})")
    if a.get("seed") != b.get("seed"):
        notes.append(f"seeds differ ({a.get('seed')} vs {b.get('seed')})")
    ma, mb = a.get("machine", {}), b.get("machine", {})
    for k in ("cpu_model", "gpu", "torch_threads", "device"):
        if ma.get(k) != mb.get(k):
            notes.append(f"machine {k} differs ({ma.get(k)} vs {mb.get(k)}): compare timings with care")
    if notes:
        out += "\n\nProtocol differences:\n" + "\n".join(f"- {n}" for n in notes)
    return out
