"""``dawnet train``: train a line recognizer (crnn, attn, ...) or the character LM (charlm) on a data spec
or on a folder of line data, with checkpoints that ``dawnet eval`` and ``dawnet read`` use."""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from dawnet.commands import CommandError

LM_MODEL = "charlm"


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="Train a text-line recognizer (crnn, attn, ...) or the character LM (charlm).",
        description="Train MODEL on --data: a data spec (hw-lines-v1, digits-v1, NAME:smoke; lines are "
                    "rendered on the fly, test fonts never seen), a folder built by 'dawnet data build', or "
                    "any line data 'dawnet data' reads (a folder of *.png + *.gt.txt, a TSV, IAM lines.txt, "
                    "PAGE/ALTO XML, LMDB). Writes OUT/last.pt (and best.pt by validation CER) and "
                    "OUT/summary.json; running again with the same OUT resumes. MODEL 'charlm' trains the "
                    "character n-gram LM on the LM text (never on test lines) and writes OUT/lm.json.gz.",
    )
    p.add_argument("model", help="A recognizer preset (crnn, crnn_small, crnn_medium, crnn_large, crnn_resnet, attn, "
                                 "attn_resnet, attn_small, attn_luong, recognizer) or 'charlm'.")
    p.add_argument("--data", required=True, metavar="SPEC_OR_DIR", help="Data spec name or data folder/file.")
    g = p.add_argument_group("length of training (totals: a resumed run continues to them)")
    g.add_argument("--epochs", type=int, default=None, help="Train until this many epochs (default: 10 unless "
                                                              "--steps is given).")
    g.add_argument("--steps", type=int, default=None, help="Train until this many optimizer steps.")
    g.add_argument("--minutes", type=float, default=None, help="Also stop after this many minutes of training "
                                                               "in this session (default: no limit).")
    o = p.add_argument_group("optimization")
    o.add_argument("--batch-size", type=int, default=32, help="Lines per batch (default: 32).")
    o.add_argument("--lr", type=float, default=1e-3, help="Peak learning rate of the one-cycle schedule (AdamW; "
                                                         "default: 0.001).")
    o.add_argument("--grad-clip", type=float, default=5.0, help="Gradient norm clip (default: 5).")
    o.add_argument("--seed", type=int, default=0, help="Seed of weights and data order (default: 0).")
    d = p.add_argument_group("data")
    d.add_argument("--height", type=int, default=None, help="Line height in px (default: the preset's, 32).")
    d.add_argument("--val", default=None, metavar="DIR", help="Validation data for a folder (default: DIR/val "
                                                              "when it exists).")
    d.add_argument("--train-lines", type=int, default=None, help="Lines per epoch for a spec (default: the "
                                                                  "spec's train size).")
    d.add_argument("--val-lines", type=int, default=300, help="Validation lines (default: 300).")
    d.add_argument("--augment", action="store_true", help="Augment training lines (shear, scale, stroke, blur, "
                                                          "noise); on the digits-v1 spec: warp and thicken each "
                                                          "digit instead.")
    d.add_argument("--workers", type=int, default=1, help="Data loader processes (default: 1).")
    d.add_argument("--order", type=int, default=6, help="charlm only: n-gram order (default: 6).")
    p.add_argument("--out", default=None, help="Output folder (default: runs/MODEL-DATA).")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: PyTorch's choice; 1 is "
                                                             "often faster on a busy or small machine).")
    p.add_argument("--json", action="store_true", help="Print the final summary as one JSON object.")
    p.set_defaults(func=run)


# -- data --------------------------------------------------------------------------------------------------

@dataclass
class LineData:
    """Datasets resolved from a ``--data`` argument."""

    name: str
    kind: str  # "spec" or "folder"
    charset: object
    train: object | None = None
    val: object | None = None
    test: object | None = None
    generator: object | None = None


def _spec_or_none(name: str):
    from dawnet.ocr.data.specs import spec

    if os.path.exists(name):
        return None
    try:
        return spec(name)
    except LookupError as e:
        raise CommandError(f"--data {name!r} is neither an existing file/folder nor a data spec: {e}") from None


def spec_charset(s):
    """The alphabet of a spec's texts: the text alphabet for lines, the ten digits for digit strings."""
    from dawnet.ocr.charset import Charset
    from dawnet.ocr.data.text import TEXT_ALPHABET

    if s.kind == "digits":
        return Charset("0123456789")
    if s.kind == "lines":
        return Charset("".join(sorted(set(TEXT_ALPHABET))))
    raise CommandError(f"spec {s.name} holds {s.kind}, not text lines: recognizers train on 'lines' or "
                       "'digits' specs (pages are for the detector)")


def _read(path: str | os.PathLike):
    from dawnet.ocr.data.formats import FormatError, read_lines

    try:
        return read_lines(path)
    except (FormatError, FileNotFoundError, ValueError) as e:
        raise CommandError(f"cannot read line data from {path}: {e}") from None


def split_folder(path: str | os.PathLike, split: str):
    """``path/split`` when ``path`` is a built data folder with that split, else None."""
    p = Path(path) / split
    return p if p.is_dir() else None


def _train_generator(s, gen, augment: bool):
    """The training lines' generator. With ``augment``, digit strings get new shapes of every digit
    (``DigitStringConfig.distort``) instead of line augmentation: the synthesizer already varies each
    string's slant, size, spacing and noise, and models otherwise memorize MNIST's 3,500 training samples."""
    if not (augment and s.kind == "digits"):
        return gen
    from dataclasses import replace

    from dawnet.ocr.data.digits import TRAIN_DISTORT
    from dawnet.ocr.data.generate import SpecGenerator

    return SpecGenerator(replace(s, synth={"distort": TRAIN_DISTORT, **s.synth}))


def load_line_data(data: str, height: int, charset=None, splits=("train", "val"), train_lines=None,
                   val_lines: int | None = None, augment: bool = False, seed: int = 0) -> LineData:
    """Datasets for ``splits`` from a spec name or a data folder (see ``dawnet train --help``)."""
    from dawnet.ocr.charset import Charset
    from dawnet.ocr.data.datasets import LineAugment, LineDataset, SyntheticLineDataset

    aug = LineAugment() if augment else None
    s = _spec_or_none(data)
    if s is not None:
        from dawnet.ocr.data.generate import SpecGenerator

        charset = charset or spec_charset(s)
        try:
            gen = SpecGenerator(s)
        except (FileNotFoundError, ModuleNotFoundError, LookupError) as e:
            raise CommandError(f"cannot generate {s.name}: {e}") from None
        out = LineData(s.name, "spec", charset, generator=gen)
        for split in splits:
            if split == "train":
                n = train_lines or s.sizes["train"]
                out.train = SyntheticLineDataset(_train_generator(s, gen, augment), "train", length=n,
                                                 height=height, charset=charset,
                                                 augment=None if s.kind == "digits" else aug,
                                                 unknown="map" if charset.unknown else "error")
            else:  # held-out splits are fixed: the same images as `dawnet data build`
                n = min(val_lines or s.sizes[split], s.sizes[split])
                setattr(out, split, SyntheticLineDataset(gen, split, length=n, height=height, fixed=True))
        return out
    root = Path(data)
    sets = {}
    for split in splits:
        sub = split_folder(root, split)
        if sub is not None:
            sets[split] = _read(sub)
    if not sets:  # a plain folder/file of lines: it is the training data (or the data to evaluate)
        sets[splits[0]] = _read(root)
    texts = [r.text for ls in sets.values() for r in ls.records]
    if not texts:
        raise CommandError(f"no text lines found in {data}")
    if charset is None:
        charset = Charset.from_texts([r.text for r in sets.get("train", next(iter(sets.values()))).records] +
                                     ([r.text for r in sets["val"].records] if "val" in sets else []))
    out = LineData(root.name or str(root), "folder", charset)
    for split, ls in sets.items():
        records = ls.records[:val_lines] if (split != "train" and val_lines) else ls.records
        ds = LineDataset(records, height=height, charset=charset if split == "train" else None,
                         augment=aug if split == "train" else None, seed=seed)
        setattr(out, split, ds)
    return out


def loader(dataset, batch_size: int, shuffle: bool, workers: int = 0, seed: int = 0):
    """A DataLoader of padded line batches; width-bucketed when the widths are known without rendering."""
    from torch.utils.data import DataLoader

    from dawnet.ocr.data.datasets import LineDataset, WidthBucketSampler, collate_lines

    kw = {"collate_fn": collate_lines, "num_workers": workers}
    if workers:
        kw["persistent_workers"] = False
    if isinstance(dataset, LineDataset):
        sampler = WidthBucketSampler(dataset.widths(), batch_size, shuffle=shuffle, seed=seed)
        return DataLoader(dataset, batch_sampler=sampler, **kw)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, **kw)


# -- training ----------------------------------------------------------------------------------------------

def set_threads(threads: int | None) -> None:
    """Apply ``--threads`` (PyTorch intra-op threads)."""
    if threads is None:
        return
    if threads < 1:
        raise CommandError(f"--threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    if args.model == LM_MODEL:
        return train_lm(args)
    return train_recognizer(args)


def _check_args(args) -> None:
    for name in ("epochs", "steps", "batch_size", "workers", "train_lines"):
        v = getattr(args, name, None)
        if v is not None and v < (0 if name == "workers" else 1):
            raise CommandError(f"--{name.replace('_', '-')} must be a positive integer, got {v}")
    if args.lr is not None and not args.lr > 0:
        raise CommandError(f"--lr must be positive, got {args.lr}")


def time_budget(minutes: float):
    """A callback that stops training after ``minutes`` of this session (checked after each optimizer step)."""
    from dawnet.callbacks import Callback

    class TimeBudget(Callback):
        def __init__(self):
            self.seconds, self.start = minutes * 60.0, time.perf_counter()

        def on_step_end(self, agent, logs) -> None:
            if time.perf_counter() - self.start > self.seconds:
                agent.stop_training = True

    return TimeBudget()


def train_recognizer(args) -> int:
    import torch

    import dawnet.ocr.models  # noqa: F401  (registers the presets)
    from dawnet.agent import Agent
    from dawnet.ocr.agents import AttentionAgent, CTCAgent
    from dawnet.ocr.models import model_cfgs
    from dawnet.registry import create_model, is_model
    from dawnet.training.callbacks import Checkpoint
    from dawnet.training.schedules import SuperConvergence

    _check_args(args)
    if not is_model(args.model) or (args.model not in model_cfgs and args.model != "recognizer"):
        raise CommandError(f"unknown recognizer {args.model!r}; choose one of {', '.join(sorted(model_cfgs))}, "
                           f"'recognizer' or '{LM_MODEL}'")
    torch.manual_seed(args.seed)
    height = args.height or model_cfgs.get(args.model, {}).get("height", 32)
    data = load_line_data(args.data, height, train_lines=args.train_lines, val_lines=args.val_lines,
                          augment=args.augment, seed=args.seed)
    if args.val and data.kind == "folder":
        data.val = load_line_data(args.val, height, charset=data.charset, splits=("val",),
                                  val_lines=args.val_lines).val
    cs = data.charset
    out = Path(args.out or f"runs/{args.model}-{data.name.replace(':', '-')}")
    train_loader = loader(data.train, args.batch_size, shuffle=True, workers=args.workers, seed=args.seed)
    val_loader = loader(data.val, args.batch_size, shuffle=False) if data.val is not None else None
    epochs = args.epochs if (args.epochs or args.steps) else 10
    total = args.steps or epochs * len(train_loader)
    callbacks = [Checkpoint(out, keep=0, monitor="val_cer" if val_loader else None)]
    if args.minutes:
        callbacks.append(time_budget(args.minutes))
    last = out / "last.pt"
    if last.exists():
        agent = Agent.load(last, map_location="cpu" if not torch.cuda.is_available() else None, callbacks=callbacks)
        if agent.charset != cs:
            raise CommandError(f"{last} was trained with another charset than {args.data} gives; use another --out")
        print(f"resuming {last} at epoch {agent.epoch}, step {agent.step}")
    else:
        ctc = model_cfgs.get(args.model, {}).get("head", "ctc") == "ctc"
        model = create_model(args.model, num_classes=cs.num_ctc_classes if ctc else cs.num_attn_classes,
                             height=height)
        opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
        step_size = max(1, int(0.45 * total))
        schedule = SuperConvergence(opt, base_lr=args.lr / 10, max_lr=args.lr, step_size=step_size,
                                    annihilate_steps=max(0, total - 2 * step_size), annihilate_to=args.lr / 1000)
        cls = CTCAgent if ctc else AttentionAgent
        agent = cls(model, opt, schedule=schedule, charset=cs, grad_clip=args.grad_clip, seed=args.seed,
                    callbacks=callbacks)
    params = sum(p.numel() for p in agent.model.parameters())
    print(f"training {args.model} ({params / 1e6:.2f} M params, {len(cs)} characters) on {data.name}: "
          f"{len(data.train)} lines/epoch, {total} steps -> {out}")
    start = time.perf_counter()
    agent.fit(train_loader, epochs=None if args.steps else epochs, steps=args.steps, val=val_loader)
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    agent.save(last)
    summary = {"model": args.model, "data": data.name, "params": params, "epochs": agent.epoch,
               "steps": agent.step, "train_seconds": round(agent.elapsed, 1), "session_seconds": round(seconds, 1),
               "checkpoint": str(last.resolve())}
    if val_loader is not None:
        summary.update({f"val_{k}": v for k, v in agent.evaluate(val_loader).items()})
    _write_json(out / "summary.json", summary)
    if args.json:
        print(json.dumps(summary))
    else:
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    return 0


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(obj, indent=2))
    os.replace(tmp, path)


# -- the character LM --------------------------------------------------------------------------------------

def lm_texts(data: str, seed: int = 0) -> tuple[list[str], list[str], object]:
    """LM training lines and held-out lines for ``data`` (never test lines), and the charset to cover.

    Spec/built-folder LM text is documents; they are cut into lines the way the line data is, so the LM
    learns where lines start and end.
    """
    import numpy as np

    from dawnet.ocr.data.text import cut_lines

    s = _spec_or_none(data)
    if s is not None:
        cs = spec_charset(s)
        if s.kind != "lines":
            raise CommandError(f"{s.name} has no LM text (digit strings are random): train the LM on a lines spec")
        from dawnet.ocr.data.text import build_corpus

        corpus = build_corpus(s.seed, s.text_source)
        train_docs, held_docs = corpus.lm_text, corpus.documents["val"]
    else:
        root = Path(data)
        lm_dir = root / "lm"
        cs = None
        if (lm_dir / "train.txt").is_file():
            train_docs = (lm_dir / "train.txt").read_text(encoding="utf-8").splitlines()
            val = lm_dir / "val.txt"
            held_docs = val.read_text(encoding="utf-8").splitlines() if val.is_file() else []
        elif root.is_file() and root.suffix == ".txt":
            train_docs, held_docs = root.read_text(encoding="utf-8").splitlines(), []
        else:  # transcriptions of the training lines (a folder's test split is never read)
            train = split_folder(root, "train") or root
            train_docs = [r.text for r in _read(train).records]
            val = split_folder(root, "val")
            held_docs = [r.text for r in _read(val).records] if val else []
            return train_docs, held_docs, cs
    rng = np.random.default_rng(seed)
    train = cut_lines([d for d in train_docs if d.strip()], rng)
    held = cut_lines([d for d in held_docs if d.strip()], rng)
    return train, held, cs


def train_lm(args) -> int:
    from dawnet.ocr.lm import CharNgramLM

    if args.order < 1:
        raise CommandError(f"--order must be >= 1, got {args.order}")
    start = time.perf_counter()
    train, held, cs = lm_texts(args.data, args.seed)
    if not train:
        raise CommandError(f"no LM text found in {args.data}")
    lm = CharNgramLM.train(train, order=args.order, vocab=cs.chars if cs is not None else None)
    out = Path(args.out or f"runs/{LM_MODEL}-{Path(args.data).name.replace(':', '-')}")
    path = lm.save(out / "lm.json.gz")
    summary = {"model": LM_MODEL, "order": args.order, "data": args.data, "train_lines": len(train),
               "train_chars": sum(map(len, train)), "held_out_lines": len(held),
               "held_out_perplexity": round(lm.perplexity(held), 4) if held else None,
               "contexts": len(lm._ctx), "seconds": round(time.perf_counter() - start, 1), "path": str(path)}
    _write_json(out / "summary.json", summary)
    print(json.dumps(summary) if args.json else
          " ".join(f"{k}={v}" for k, v in summary.items()))
    return 0
