"""``dawnet train``: train a line recognizer (crnn, attn, ...) or the character LM (charlm) on a data spec
or on a folder of line data, with checkpoints that ``dawnet eval`` and ``dawnet read`` use.

A run lives in its ``--out`` folder: ``last.pt`` (and ``best.pt``), ``run.json`` (what the run is: model, data,
charset, height, recipe, batch size, seed, the schedule's length) and ``summary.json``. Running again with the
same ``--out`` resumes it; a folder holding another model, data or charset is refused, and so is a changed
option, except a longer ``--steps``/``--epochs`` total, which adds a new one-cycle phase (at ``--lr`` when given).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

from dawnet.commands import CommandError, set_threads
from dawnet.commands._types import int_range, nonnegative_int, positive_float, positive_int

__all__ = ["register", "run", "set_threads", "time_budget"]

# The line-data helpers moved to the library (dawnet.ocr.lines); the names commands imported from here still
# resolve, imported on first use so that this module stays cheap to import.
_MOVED = {"LineData": "LineData", "load_line_data": "load_line_data", "loader": "line_loader",
          "lm_texts": "lm_texts", "spec_charset": "spec_charset", "split_folder": "split_folder"}


def __getattr__(name: str):
    if name in _MOVED:
        from dawnet.ocr import lines

        return getattr(lines, _MOVED[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


LM_MODEL = "charlm"
RUN_FILE = "run.json"
RUN_FORMAT = "dawnet.train.run"
# Options that define a run: None means "not given" (a new run takes the default, a resumed run its own).
DEFAULTS = {"batch_size": 32, "lr": 1e-3, "grad_clip": 5.0, "seed": 0}


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="Train a text-line recognizer (crnn, attn, ...) or the character LM (charlm).",
        description="Train MODEL on --data: a data spec (hw-lines-v1, digits-v1, NAME:smoke; lines are "
                    "rendered on the fly, test fonts never seen), a folder built by 'dawnet data build', or "
                    "any line data 'dawnet data' reads (a folder of *.png + *.gt.txt, a TSV, IAM lines.txt, "
                    "PAGE/ALTO XML, LMDB). Writes OUT/last.pt (and best.pt by validation CER), OUT/run.json and "
                    "OUT/summary.json; running again with the same OUT resumes (the same model, data, charset "
                    "and options; a larger --steps/--epochs total adds a new one-cycle phase). MODEL 'charlm' "
                    "trains the character n-gram LM on the LM text (never on test lines) and writes "
                    "OUT/lm.json.gz. Exit status: 0 done; 1 training diverged after a checkpoint was saved (it "
                    "is kept); 2 bad input, or divergence before anything was saved.",
    )
    p.add_argument("model", help="A recognizer preset (crnn, crnn_small, crnn_medium, crnn_large, crnn_resnet, attn, "
                                 "attn_resnet, attn_small, attn_luong, recognizer) or 'charlm'.")
    p.add_argument("--data", required=True, metavar="SPEC_OR_DIR", help="Data spec name or data folder/file.")
    g = p.add_argument_group("length of training (totals: a resumed run continues to them)")
    g.add_argument("--epochs", type=positive_int, default=None, help="Train until this many epochs (default: 10 "
                                                                       "unless --steps is given).")
    g.add_argument("--steps", type=positive_int, default=None, help="Train until this many optimizer steps.")
    g.add_argument("--minutes", type=positive_float, default=None, help="Also stop after this many minutes of "
                                                                         "training in this session (default: no "
                                                                         "limit).")
    o = p.add_argument_group("optimization (a resumed run keeps its own: give them only to start a run)")
    o.add_argument("--batch-size", type=positive_int, default=None, help="Lines per batch (default: 32).")
    o.add_argument("--lr", type=positive_float, default=None, help="Peak learning rate of the one-cycle schedule "
                                                                  "(AdamW; default: 0.001). On a resumed run: "
                                                                  "the peak of the new phase that a larger "
                                                                  "--steps/--epochs adds.")
    o.add_argument("--grad-clip", type=positive_float, default=None, help="Gradient norm clip (default: 5).")
    o.add_argument("--seed", type=nonnegative_int, default=None, help="Seed of weights and data order (default: 0).")
    d = p.add_argument_group("data")
    d.add_argument("--height", type=int_range(16, 128), default=None, help="Line height in px, 16 to 128 (default: "
                                                                            "the preset's, 32).")
    d.add_argument("--val", default=None, metavar="DIR", help="Validation data for a folder (default: DIR/val "
                                                              "when it exists).")
    d.add_argument("--train-lines", type=positive_int, default=None, help="Lines per epoch for a spec (default: "
                                                                          "the spec's train size).")
    d.add_argument("--val-lines", type=positive_int, default=300, help="Validation lines (default: 300).")
    d.add_argument("--augment", action="store_true", help="Augment training lines (shear, scale, stroke, blur, "
                                                          "noise); on the digits-v1 spec: warp and thicken each "
                                                          "digit instead.")
    d.add_argument("--workers", type=nonnegative_int, default=1, help="Data loader processes (default: 1).")
    d.add_argument("--order", type=positive_int, default=6, help="charlm only: n-gram order (default: 6).")
    p.add_argument("--out", default=None, help="Output folder (default: runs/MODEL-DATA).")
    p.add_argument("--threads", type=positive_int, default=None, help="CPU threads for PyTorch (default: PyTorch's "
                                                                      "choice; 1 is often faster on a busy or small "
                                                                      "machine).")
    p.add_argument("--json", action="store_true", help="Print the final summary as one JSON object.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    if args.model == LM_MODEL:
        return train_lm(args)
    return train_recognizer(args)


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


# -- the run record ----------------------------------------------------------------------------------------

def _read_run(out: Path) -> dict | None:
    path = out / RUN_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise CommandError(f"{path} is not readable JSON ({e}): restore it, or train into another --out") from None
    if not isinstance(record, dict) or record.get("format") != RUN_FORMAT:
        raise CommandError(f"{path} is not a dawnet train run record: train into another --out")
    return record


def _write_json(path: Path, obj) -> None:
    from dawnet.atomic import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(obj, indent=2))


def _check_model(args, out: Path, saved_model: str | None) -> None:
    if saved_model is not None and saved_model != args.model:
        raise CommandError(f"{out} holds a {saved_model} run, not {args.model}: pass another --out to train "
                           f"{args.model}, or train {saved_model} to resume it")


def _check_same_run(args, out: Path, agent, record: dict | None, data, data_id: str,
                    height: int) -> dict:
    """Refuse a resume that would silently train something else; returns the run's options."""
    from dawnet.registry import model_spec

    last = out / "last.pt"
    _check_model(args, out, (model_spec(agent.model) or {}).get("name"))
    if record and record["data"] != data_id:
        raise CommandError(f"{out} holds a run on {record['data']}, not {data_id}: pass another --out for this "
                           f"data, or --data {record['data_arg']} to resume the run")
    if agent.charset != data.charset:
        raise CommandError(f"{last} was trained with another charset ({len(agent.charset)} characters) than "
                           f"{args.data} gives ({len(data.charset)}): pass another --out for this data")
    if agent.height != height:
        raise CommandError(f"{last} reads lines of height {agent.height}, not {height}: resume it with --height "
                           f"{agent.height}, or pass another --out")
    if record:
        options = dict(record["options"])
    else:  # a run from before run.json: what its checkpoint knows
        options = {"grad_clip": agent.grad_clip, "seed": agent.seed}
        if getattr(agent.schedule, "max_lrs", None):
            options["lr"] = float(agent.schedule.max_lrs[0])
    for name in ("batch_size", "grad_clip", "seed", "train_lines"):
        given = getattr(args, name)
        if given is not None and name in options and given != options[name]:
            flag = "--" + name.replace("_", "-")
            raise CommandError(f"{flag} {given:g} differs from this run's {options[name]:g}: a resumed run keeps "
                               f"its options; omit {flag} to resume, or pass another --out")
    if record and bool(args.augment) != bool(options.get("augment")):
        said = "with" if options.get("augment") else "without"
        raise CommandError(f"this run trained {said} --augment: resume it {said} --augment, or pass another --out")
    for name, value in DEFAULTS.items():
        options.setdefault(name, value)
    return options


def _check_val_charset(data, where: str) -> None:
    """Validation texts must be spelled with the training charset: checked before the first step."""
    from dawnet.ocr.charset import describe_chars

    cs = data.charset
    texts = getattr(data.val, "texts", None)
    if cs.unknown or not texts:
        return
    missing = cs.missing(texts)
    if missing:
        raise CommandError(f"{where} holds {len(missing)} character(s) that the training data never shows "
                           f"({describe_chars(sorted(missing))}): add training lines with them, or remove those "
                           "lines from the validation data")


def _schedule_end(record: dict | None, agent) -> int:
    """The step where the run's last one-cycle phase ends."""
    if record is None:  # a run from before run.json: its schedule says
        return int(getattr(agent.schedule, "total_steps", agent.step))
    if record["phases"]:
        last = record["phases"][-1]
        return last["from_step"] + last["steps"]
    return record["schedule_steps"]


# -- training ----------------------------------------------------------------------------------------------

def _blank_lines(data, note) -> dict:
    """Count the blank (inkless) images of folder data before the first step and say so: a model must not learn
    or be validated on white images without a word. Synthetic spec lines are never blank; every training line
    blank is refused."""
    counts = {}
    for split in ("train", "val"):
        dataset = getattr(data, split)
        if dataset is None or not hasattr(dataset, "blank_lines"):
            continue
        blank = dataset.blank_lines()
        if blank and len(blank) == len(dataset) and split == "train":
            raise CommandError(f"every one of the {len(blank)} training lines is blank (no ink), e.g. {blank[0]}: "
                               "check the images (a 16-bit or alpha-only file is read correctly; an empty crop "
                               "is not)")
        if blank:
            note(f"{len(blank)} of {len(dataset)} {split} lines are blank (no ink), e.g. {blank[0]}: they are "
                 "kept, but teach nothing; remove them or fix their images")
        counts[f"blank_{split}_lines"] = len(blank)
    return counts


def train_recognizer(args) -> int:
    import torch

    import dawnet.ocr.models  # noqa: F401  (registers the presets)
    from dawnet.agent import Agent, NonFiniteLossError
    from dawnet.ocr.agents import AttentionAgent, CTCAgent
    from dawnet.ocr.lines import data_spec, line_loader, load_line_data
    from dawnet.ocr.models import model_cfgs
    from dawnet.ocr.recipes import RECOGNIZER
    from dawnet.registry import create_model, is_model
    from dawnet.training.callbacks import Checkpoint

    note = _notes(args.json)
    if not is_model(args.model) or (args.model not in model_cfgs and args.model != "recognizer"):
        raise CommandError(f"unknown recognizer {args.model!r}; choose one of {', '.join(sorted(model_cfgs))}, "
                           f"'recognizer' or '{LM_MODEL}'")
    s = data_spec(args.data)
    if args.val and s is not None:
        raise CommandError(f"--val is for folder data: the spec {s.name} has its own validation split; omit --val")
    name = s.name if s is not None else (Path(args.data).name or str(Path(args.data)))
    data_id = f"{s.name}:{s.size}" if s is not None else name  # what a resumed run must train on again
    out = Path(args.out or f"runs/{args.model}-{name.replace(':', '-')}")
    last = out / "last.pt"
    record = _read_run(out) if last.exists() else None  # a run.json without a checkpoint holds no run yet
    if record is not None:
        _check_model(args, out, record["model"])
    given = record["options"] if record else {}
    seed = args.seed if args.seed is not None else given.get("seed", DEFAULTS["seed"])
    torch.manual_seed(seed)
    height = args.height or (record or {}).get("height") or model_cfgs.get(args.model, {}).get("height", 32)
    train_lines = args.train_lines if args.train_lines is not None else given.get("train_lines")
    data = load_line_data(args.data, height, train_lines=train_lines, val_lines=args.val_lines,
                          augment=args.augment, seed=seed)
    if args.val:
        data.val = load_line_data(args.val, height, charset=data.charset, splits=("val",),
                                  val_lines=args.val_lines).val
    _check_val_charset(data, f"--val {args.val}" if args.val else f"the validation data of {args.data}")
    blank = _blank_lines(data, note)
    cs = data.charset
    callbacks = [Checkpoint(out, keep=0, monitor="val_cer" if data.val is not None else None)]
    if args.minutes:
        callbacks.append(time_budget(args.minutes))
    resumed = last.exists()
    if resumed:
        agent = Agent.load(last, map_location="cpu" if not torch.cuda.is_available() else None, callbacks=callbacks)
        options = _check_same_run(args, out, agent, record, data, data_id, height)
    else:
        options = {k: getattr(args, k) if getattr(args, k) is not None else v for k, v in DEFAULTS.items()}
        options.update(augment=bool(args.augment), train_lines=train_lines)
    train_loader = line_loader(data.train, options["batch_size"], shuffle=True, workers=args.workers,
                          seed=options["seed"])
    val_loader = line_loader(data.val, options["batch_size"], shuffle=False) if data.val is not None else None
    epochs = args.epochs if (args.epochs or args.steps) else 10
    total = args.steps or epochs * len(train_loader)
    if resumed:
        planned = record["schedule_steps"] if record else _schedule_end(None, agent)
        phases = list(record["phases"]) if record else []
        end = _schedule_end(record, agent) if record else planned
        lr_now = phases[-1]["lr"] if phases else options["lr"]
        if total > end:  # past the schedule: a new one-cycle phase for the extra steps
            lr = args.lr or lr_now
            phases.append({"from_step": end, "steps": total - end, "lr": lr})
            note(f"{total} steps asked for, past this run's schedule, which ends at step {end}: adding a new "
                  f"one-cycle phase of {total - end} steps after it (lr {lr / 10:g} -> {lr:g} -> {lr / 1000:g})")
        elif args.lr is not None and args.lr != lr_now:
            raise CommandError(f"--lr {args.lr:g} differs from this run's {lr_now:g}: a resumed run keeps its "
                               f"schedule; omit --lr to resume, or give a total past step {end} (--steps or "
                               "--epochs) to add a new phase that peaks at --lr")
        note(f"resuming {last} at epoch {agent.epoch}, step {agent.step}")
    else:
        ctc = model_cfgs.get(args.model, {}).get("head", "ctc") == "ctc"
        model = create_model(args.model, num_classes=cs.num_ctc_classes if ctc else cs.num_attn_classes,
                             height=height)
        recipe = RECOGNIZER.with_lr(options["lr"])
        opt, schedule = recipe.build(model.parameters(), total)
        cls = CTCAgent if ctc else AttentionAgent
        agent = cls(model, opt, schedule=schedule, charset=cs, grad_clip=options["grad_clip"], seed=options["seed"],
                    callbacks=callbacks)
        planned, phases = total, []
    record = {"format": RUN_FORMAT, "model": args.model, "data": data_id, "data_arg": args.data,
              "charset": cs.to_dict(), "height": height, "options": options, "schedule_steps": planned,
              "phases": phases}
    _write_json(out / RUN_FILE, record)
    params = sum(p.numel() for p in agent.model.parameters())
    note(f"training {args.model} ({params / 1e6:.2f} M params, {len(cs)} characters) on {data.name}: "
          f"{len(data.train)} lines/epoch, {total} steps -> {out}")
    start = time.perf_counter()
    try:
        if agent.step >= total:
            note(f"{last} is already at step {agent.step}, which reaches the total of {total} steps: nothing to "
                  "train (pass a larger --steps or --epochs to continue)")
        elif phases:
            _fit_phases(agent, train_loader, val_loader, record, total, RECOGNIZER)
        else:
            agent.fit(train_loader, epochs=None if args.steps else epochs, steps=args.steps, val=val_loader)
    except NonFiniteLossError:
        return _diverged(agent, last, options["lr"] if not phases else phases[-1]["lr"])
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    agent.save(last)
    summary = {"model": args.model, "data": data.name, "params": params, "epochs": agent.epoch,
               "steps": agent.step, "train_seconds": round(agent.elapsed, 1), "session_seconds": round(seconds, 1),
               "checkpoint": str(last.resolve()), **blank}
    if val_loader is not None:
        summary.update({f"val_{k}": v for k, v in agent.evaluate(val_loader).items()})
    _write_json(out / "summary.json", summary)
    if args.json:
        print(json.dumps(summary))
    else:
        print(" ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in summary.items()))
    return 0


def _notes(as_json: bool):
    """``print`` for progress notes: on stderr with ``--json``, so standard output is exactly one JSON document."""
    return functools.partial(print, file=sys.stderr if as_json else sys.stdout)


def _fit_phases(agent, train_loader, val_loader, record: dict, total: int, recipe) -> None:
    """Train to ``total`` through the run's phases: each phase after the first schedule gets a fresh one-cycle
    schedule of its own length, installed when the agent reaches the phase's first step."""
    bounds = [(record["schedule_steps"], None)] + [(p["from_step"] + p["steps"], p) for p in record["phases"]]
    for end, phase in bounds:
        if agent.step >= end:
            continue
        if phase is not None and agent.step == phase["from_step"]:
            agent.schedule = recipe.with_lr(phase["lr"]).schedule(agent.optimizer, phase["steps"])
        agent.fit(train_loader, steps=min(end, total), val=val_loader)
        if agent.step < min(end, total):  # stopped early (--minutes): a resume continues from here
            return


def _diverged(agent, last: Path, lr: float) -> int:
    """A NaN/inf loss or weights: one line; exit 1 when a checkpoint of this run is kept, else 2."""
    message = (f"training diverged after step {agent.step} (the loss or the weights became NaN/inf at lr {lr:g}): "
               "lower --lr, or find one with 'dawnet lr-find'")
    if last.exists():
        print(f"dawnet: error: {message}; {last} keeps the last checkpoint saved before that", file=sys.stderr)
        return 1
    raise CommandError(message + "; nothing was saved")


# -- the character LM --------------------------------------------------------------------------------------

def train_lm(args) -> int:
    from dawnet.ocr.lines import lm_texts
    from dawnet.ocr.lm import CharNgramLM

    start = time.perf_counter()
    train, held, cs = lm_texts(args.data, args.seed or 0)
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
