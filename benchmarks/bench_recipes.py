"""Training-recipe experiments behind the cpu benchmark profile: one recognizer or detector trained exactly as
``dawnet bench`` trains it (same loader, the same recipe of ``dawnet.ocr.recipes``: optimizer, one-cycle
schedule, clip; same seed), with the knob under test changed, then scored. The profile's batch size,
augmentation and detector loss were chosen from these runs.

    # recognizer: greedy CER on the unseen-font test lines and the digit strings
    .venv/bin/python benchmarks/bench_recipes.py rec --data DATA --steps 600 --batch 32 --lr 3e-3 [--augment]
    .venv/bin/python benchmarks/bench_recipes.py rec --data DATA --steps 1600 --batch 12 --lr 2e-3
    # detector: COCO mAP on the test pages, binary or IoU-aware objectness
    .venv/bin/python benchmarks/bench_recipes.py det --data DATA --steps 300 [--binary-objectness]

DATA holds folders built by ``dawnet data build`` (or by ``dawnet bench``): ``hw-lines-v1``, ``digits-v1``
and ``pages-v1`` for training (``--train-suffix``, default: the full specs), and the cpu profile's test
prefixes ``*-bench-cpu`` for scoring. Each run appends one JSON line to ``--log``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch


def run_recognizer(a: argparse.Namespace) -> dict:
    from dawnet.ocr import bench
    from dawnet.ocr.data.datasets import LineDataset
    from dawnet.ocr.data.specs import spec
    from dawnet.ocr.lines import spec_charset
    from dawnet.ocr.reading import evaluate_lines

    charset = spec_charset(spec("hw-lines-v1"))
    data = {n: {"path": str(Path(a.data) / f"{n}{a.train_suffix}")} for n in ("hw-lines-v1", "digits-v1")}
    prof = dataclasses.replace(bench.PROFILES["cpu"], rec_steps=a.steps, rec_batch=a.batch, rec_lr=a.lr,
                               augment=a.augment)
    agent, seconds = bench.train_recognizer(a.model, data, charset, prof, a.seed, torch.device("cpu"), False)
    agent.set_decoder(beam=1, lm_weight=0.0, bonus=0.0)
    out = {"model": a.model, "steps": a.steps, "batch": a.batch, "lr": a.lr, "augment": a.augment,
           "train_s": round(seconds, 1)}
    for name in ("hw-lines-v1", "digits-v1"):
        test = LineDataset(Path(a.data) / f"{name}-bench-cpu" / "test" / "labels.tsv", height=agent.height)
        out[f"cer_{name}"] = round(100 * evaluate_lines(agent, test, batch_size=32, progress=False)["cer"], 2)
    return out


def run_detector(a: argparse.Namespace) -> dict:
    from dawnet.ocr import bench, detection

    prof = dataclasses.replace(bench.PROFILES["cpu"], det_steps=a.steps, det_batch=a.batch, det_lr=a.lr)
    data = {"pages-v1": {"path": str(Path(a.data) / f"pages-v1{a.train_suffix}")}}
    # --binary-objectness: the loss before IoU-aware objectness, for the side-by-side comparison
    agent, seconds = bench.train_detector(data, prof, a.seed, torch.device("cpu"), False,
                                          iou_aware=not a.binary_objectness)
    test = detection.DetectionDataset(Path(a.data) / "pages-v1-bench-cpu" / "test" / "coco.json", prof.det_size)
    r = agent.evaluate(detection.detection_loader(test, 4))
    return {"steps": a.steps, "batch": a.batch, "lr": a.lr, "iou_aware": agent.iou_aware,
            "train_s": round(seconds, 1), "map50": round(r["map50"], 4), "map": round(r["map"], 4)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=["rec", "det"], help="Train a recognizer or the detector.")
    p.add_argument("--data", required=True, help="Folder of built data sets (see above).")
    p.add_argument("--train-suffix", default="", help="Training folders' suffix (--train-suffix=-bench-cpu).")
    p.add_argument("--model", default="crnn", help="Recognizer preset (rec only; default: crnn).")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=None, help="Lines or pages per step (default: 32 / 8).")
    p.add_argument("--lr", type=float, default=None, help="Peak LR (default: 3e-3).")
    p.add_argument("--augment", action="store_true", help="Augment the training lines (rec).")
    p.add_argument("--binary-objectness", action="store_true", help="Binary objectness targets (det).")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: PyTorch's choice).")
    p.add_argument("--log", default="bench_recipes.jsonl", help="JSON-lines file the result is appended to.")
    a = p.parse_args()
    a.batch = a.batch or (32 if a.what == "rec" else 8)
    a.lr = a.lr or 3e-3
    if a.threads:
        torch.set_num_threads(a.threads)
    start = time.perf_counter()
    result = run_recognizer(a) if a.what == "rec" else run_detector(a)
    result.update(what=a.what, threads=torch.get_num_threads(), wall_s=round(time.perf_counter() - start, 1))
    print(json.dumps(result))
    with open(a.log, "a", encoding="utf-8") as f:
        f.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
