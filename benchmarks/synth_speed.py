"""Line synthesis speed against CRNN training speed, measured side by side in one run.

Issue 5 asks that synthetic lines come at least 5x faster than the CRNN trains on the same machine,
so on-the-fly synthesis never starves training. This script measures, in one process and one run:

1. synthesis: ``hw-lines-v1`` (``--spec``) train lines rendered by ``SpecGenerator.item`` (PIL image out): first
   with cold glyph caches, then with the caches filled (``prefill``, the steady state of any long
   build or training run), in one process and with a pool of ``--workers`` processes;
2. the dataset path: ``SyntheticLineDataset`` items (render + resize to 32 px + tensor);
3. CRNN training: Adam steps on batches of 32 lines of 32x256 with CTC loss (the project's ``crnn``
   preset when ``dawnet.ocr.models`` is importable, else a standard inline CRNN: conv/pool stack with
   (2,1) pools -> 2-layer BiLSTM(256) -> Linear), with torch's default thread count;

and prints lines/s for each and the ratios synthesis / training.

    .venv/bin/python benchmarks/synth_speed.py            # about a minute on 2 CPU cores
    .venv/bin/python benchmarks/synth_speed.py --json
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor

import torch
from torch import nn

from dawnet.ocr.charset import Charset
from dawnet.ocr.data.datasets import SyntheticLineDataset
from dawnet.ocr.data.generate import SpecGenerator
from dawnet.ocr.data.specs import spec

_GEN: dict = {}


def inline_crnn(num_classes: int) -> nn.Module:
    """The standard small CRNN: VGG-ish conv/pool stack ((2,1) pools keep width) -> 2x BiLSTM(256) -> Linear."""

    class CRNN(nn.Module):
        def __init__(self):
            super().__init__()

            def block(i, o, pool):
                return [nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(inplace=True), nn.MaxPool2d(pool)]

            self.cnn = nn.Sequential(*block(1, 64, 2), *block(64, 128, 2), *block(128, 256, (2, 1)),
                                     *block(256, 256, (2, 1)), *block(256, 512, (2, 1)))  # 32 -> 1 high, W/4
            self.rnn = nn.LSTM(512, 256, num_layers=2, bidirectional=True, batch_first=True)
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            f = self.cnn(x).squeeze(2).transpose(1, 2)  # (N, W/4, 512)
            return self.fc(self.rnn(f)[0]).log_softmax(-1)  # (N, T, C)

    return CRNN()


def project_crnn(num_classes: int):
    import dawnet.ocr.models  # noqa: F401 - registers the presets
    from dawnet.registry import create_model

    return create_model("crnn_medium", num_classes=num_classes, height=32)  # the measured README numbers


def measure_training(model_kind: str, num_classes: int, steps: int, batch: int = 32) -> tuple[float, float, str]:
    torch.manual_seed(0)
    model, name = None, "inline CRNN"
    if model_kind in ("auto", "crnn"):
        try:
            model, name = project_crnn(num_classes), "dawnet crnn_medium preset"
        except Exception as e:  # the project's model may not exist yet: fall back, and say so
            if model_kind == "crnn":
                raise
            print(f"(dawnet.ocr.models unavailable: {type(e).__name__}: {e}; using the inline CRNN)")
    if model is None:
        model = inline_crnn(num_classes)
    model.train()
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    x = torch.rand(batch, 1, 32, 256)
    widths = torch.full((batch,), 256, dtype=torch.long)
    tlen = torch.randint(10, 30, (batch,))
    targets = torch.randint(1, num_classes, (int(tlen.sum()),))

    def step():
        out = model(x, widths) if name != "inline CRNN" else model(x)
        if isinstance(out, tuple):
            logp, lengths = out
        else:
            logp, lengths = out, torch.full((batch,), out.shape[1], dtype=torch.long)
        loss = ctc(logp.transpose(0, 1), targets, lengths, tlen)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    t, c = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    return batch * steps / (time.perf_counter() - t), batch * steps / (time.process_time() - c), name


def _init(gen):
    _GEN["gen"] = gen
    gen.prefill("train")  # warm glyph caches: the steady state of a long build or training run


def _render(i: int) -> int:
    return _GEN["gen"].item("train", i).image.width


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--lines", type=int, default=600, help="lines to synthesize per measurement (default 600)")
    ap.add_argument("--steps", type=int, default=8, help="CRNN training steps to time (default 8)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                    help="processes for the parallel synthesis measurement (default: CPU count)")
    ap.add_argument("--model", default="auto", choices=["auto", "crnn", "inline"],
                    help="CRNN to time: the project's preset (auto falls back to inline) or the inline one")
    ap.add_argument("--spec", default="hw-lines-v1",
                    help="lines spec whose train lines are synthesized (default hw-lines-v1; hw-lines-v2: the "
                         "248-family pinned pool, whose prefill fills 247 fonts' caches)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args()

    gen = SpecGenerator(spec(args.spec))
    n = args.lines
    t = time.perf_counter()
    cold = [gen.item("train", 10_000_000 + i).image.width for i in range(n // 2)]
    synth_cold = len(cold) / (time.perf_counter() - t)
    t = time.perf_counter()
    gen.prefill("train")  # warm glyph caches: the steady state of a long build or training run
    prefill_s = time.perf_counter() - t
    t, c = time.perf_counter(), time.process_time()
    widths = [gen.item("train", i).image.width for i in range(n)]
    synth_1 = n / (time.perf_counter() - t)
    synth_cpu = n / (time.process_time() - c)

    cs = Charset.from_texts(gen.texts("train"))
    ds = SyntheticLineDataset(gen, "train", length=n, height=32, charset=cs, fixed=True)
    t = time.perf_counter()
    for i in range(n):
        ds[i]
    dataset_1 = n / (time.perf_counter() - t)

    with ProcessPoolExecutor(args.workers, initializer=_init, initargs=(gen,)) as ex:
        list(ex.map(_render, range(args.workers), chunksize=1))  # all workers started and warm
        t = time.perf_counter()
        list(ex.map(_render, range(n, 3 * n), chunksize=16))
        synth_p = 2 * n / (time.perf_counter() - t)

    train, train_cpu, model_name = measure_training(args.model, cs.num_ctc_classes, args.steps)
    r = {"synth_lines_per_s_cold_1proc": round(synth_cold, 1), "prefill_seconds": round(prefill_s, 1),
         "synth_lines_per_s_1proc": round(synth_1, 1), "dataset_items_per_s_1proc": round(dataset_1, 1),
         f"synth_lines_per_s_{args.workers}proc": round(synth_p, 1), "crnn_train_lines_per_s": round(train, 1),
         "ratio_1proc": round(synth_1 / train, 2), "ratio_dataset_1proc": round(dataset_1 / train, 2),
         f"ratio_{args.workers}proc": round(synth_p / train, 2), "crnn": model_name,
         "synth_lines_per_cpu_s": round(synth_cpu, 1), "crnn_train_lines_per_cpu_s": round(train_cpu, 1),
         "ratio_cpu_time": round(synth_cpu / train_cpu, 2), "load_average_1min": round(os.getloadavg()[0], 2),
         "mean_line_width_px": round(sum(widths) / len(widths), 1), "torch_threads": torch.get_num_threads(),
         "cpu_count": os.cpu_count()}
    if args.json:
        print(json.dumps(r, indent=2))
        return 0
    print(f"synthesis, cold glyph caches:   {synth_cold:8.1f} lines/s  (caches then filled in {prefill_s:.1f} s)")
    print(f"synthesis, 1 process:           {synth_1:8.1f} lines/s  (mean width {r['mean_line_width_px']} px)")
    print(f"dataset items (render+tensor):  {dataset_1:8.1f} lines/s")
    print(f"synthesis, {args.workers} processes:         {synth_p:8.1f} lines/s")
    print(f"{model_name} training (32x256, batch 32, {torch.get_num_threads()} threads): {train:8.1f} lines/s")
    print(f"per CPU-second (robust to other load): synthesis {synth_cpu:.1f} lines, training {train_cpu:.1f} lines"
          f" -> {r['ratio_cpu_time']}x;  load average {r['load_average_1min']} on {os.cpu_count()} CPUs")
    print(f"ratio synthesis/training: 1 process {r['ratio_1proc']}x, dataset path {r['ratio_dataset_1proc']}x, "
          f"{args.workers} processes {r[f'ratio_{args.workers}proc']}x   (target >= 5x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
