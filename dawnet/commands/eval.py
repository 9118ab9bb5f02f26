"""``dawnet eval``: CER, WER, word/line accuracy, 1-NED and lines/s of a recognizer checkpoint on line data."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from dawnet.commands import CommandError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="Measure a recognizer checkpoint: CER, WER, word accuracy, 1-NED, lines/s.",
        description="Read every line of --data with CHECKPOINT and score the text against the ground truth "
                    "(NFC, whitespace runs collapsed; case and punctuation count). --data is any line data "
                    "'dawnet data' reads (a folder of *.png + *.gt.txt, TSV, IAM, PAGE/ALTO, LMDB), a folder "
                    "built by 'dawnet data build' (its test split is used), or a spec name (its test split, "
                    "rendered exactly as 'dawnet data build' does). Greedy decoding unless --beam/--lm.",
    )
    p.add_argument("checkpoint", help="A checkpoint written by 'dawnet train' (e.g. runs/crnn-hw-lines-v1/best.pt).")
    p.add_argument("--data", required=True, metavar="DIR", help="Line data to evaluate on.")
    d = p.add_argument_group("decoding")
    d.add_argument("--lm", default=None, help="Character LM (lm.json.gz from 'dawnet train charlm') for shallow "
                                              "fusion (default: none).")
    d.add_argument("--beam", type=int, default=None, help="Beam width (default: 1 = greedy; 10 when --lm is given).")
    d.add_argument("--lm-weight", type=float, default=0.5, help="LM weight (default: 0.5; used with --lm).")
    d.add_argument("--bonus", type=float, default=None, help="Score added per character (default: 0, or 1.0 "
                                                             "with --lm).")
    p.add_argument("--limit", type=int, default=None, help="Evaluate only the first N lines (default: all).")
    p.add_argument("--batch-size", type=int, default=16, help="Lines per batch (default: 16).")
    p.add_argument("--errors", type=int, default=0, help="Also print the N worst lines (default: 0).")
    p.add_argument("--json", action="store_true", help="Print one JSON object (cer, wer, lines, lines_per_s, ...).")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: PyTorch's choice; 1 is "
                                                             "often faster on a busy or small machine).")
    p.set_defaults(func=run)


def load_recognizer(path: str, map_location: str = "cpu"):
    """A CTC or attention agent from a checkpoint, with a clear error for anything else."""
    from dawnet.agent import Agent
    from dawnet.checkpoint import CheckpointError, load_checkpoint
    from dawnet.ocr.agents import AttentionAgent, CTCAgent

    try:
        with open(path, "rb") as f:
            if f.read(2) == b"\x1f\x8b":  # gzip: what CharNgramLM.save writes
                raise CommandError(f"{path} is a gzip file (a character LM from 'dawnet train charlm'?), not a "
                                   "recognizer checkpoint: pass an LM with --lm and a checkpoint from "
                                   "'dawnet train crnn|attn' as CHECKPOINT")
    except OSError:
        pass  # missing or unreadable: load_checkpoint says what is wrong
    try:
        state = load_checkpoint(path, map_location="cpu")
    except CheckpointError as e:
        raise CommandError(str(e)) from None
    if not isinstance(state, dict) or "agent" not in state:
        raise CommandError(f"{path} is not a dawnet checkpoint (no agent in it); pass a file from 'dawnet train'")
    cls = state["agent"].get("class", "?")
    ours = {f"{c.__module__}.{c.__qualname__}" for c in (CTCAgent, AttentionAgent)}
    if cls not in ours:
        model = (state.get("model") or {}).get("spec") or {}
        raise CommandError(f"{path} holds a {cls.rsplit('.', 1)[-1]} (model {model.get('name', '?')!r}), not a "
                           "text-line recognizer: use a checkpoint from 'dawnet train crnn' or 'dawnet train attn' "
                           "(a detector finds lines on a page; it does not read them)")
    del state
    try:
        return Agent.load(path, map_location=map_location)
    except CheckpointError as e:
        raise CommandError(str(e)) from None


def configure_decoder(agent, lm_path: str | None, beam: int | None, lm_weight: float, bonus: float | None) -> None:
    from dawnet.ocr.lm import CharNgramLM

    if beam is not None and beam < 1:
        raise CommandError(f"--beam must be >= 1, got {beam}")
    lm = None
    if lm_path:
        try:
            lm = CharNgramLM.load(lm_path)
        except (FileNotFoundError, ValueError) as e:
            raise CommandError(str(e)) from None
    try:
        agent.set_decoder(beam=beam or (10 if lm else 1), lm=lm, lm_weight=lm_weight if lm else 0.0,
                          bonus=bonus if bonus is not None else (1.0 if lm else 0.0))
    except ValueError as e:
        raise CommandError(str(e)) from None


def evaluate_lines(agent, dataset, batch_size: int = 16, progress: bool = True) -> dict:
    """Read every line of ``dataset``; returns metrics, lines/s (model + decoding time) and the pairs."""
    import torch
    from tqdm.auto import tqdm

    from dawnet.commands.train import loader
    from dawnet.ocr.metrics import text_metrics

    refs, hyps, sources, seconds = [], [], [], 0.0
    agent.model.eval()
    with torch.inference_mode():
        for batch in tqdm(loader(dataset, batch_size, shuffle=False), desc="reading", unit="batch",
                          disable=not progress, leave=False):
            x, widths = batch["images"].to(agent.device), batch["widths"].to(agent.device)
            start = time.perf_counter()
            outputs = agent.model(x, widths)
            texts = agent.decode(outputs, (x, widths, True))
            seconds += time.perf_counter() - start
            refs += batch["texts"]
            hyps += texts
            sources += batch["sources"]
    result = text_metrics(refs, hyps)
    result["lines_per_s"] = len(refs) / seconds if seconds else float("nan")
    result["pairs"] = list(zip(sources, refs, hyps))
    return result


def run(args: argparse.Namespace) -> int:
    from dawnet.commands.train import load_line_data, set_threads, split_folder

    set_threads(args.threads)
    agent = load_recognizer(args.checkpoint)
    configure_decoder(agent, args.lm, args.beam, args.lm_weight, args.bonus)
    data_arg = args.data
    p = Path(data_arg)
    if p.is_dir() and split_folder(p, "test") is not None and not (p / "labels.tsv").exists():
        data_arg = str(split_folder(p, "test"))  # a built data folder: its test split
    data = load_line_data(data_arg, agent.height, charset=agent.charset, splits=("test",), val_lines=args.limit)
    dataset = data.test
    if dataset is None or len(dataset) == 0:
        raise CommandError(f"no lines to evaluate in {args.data}")
    result = evaluate_lines(agent, dataset, args.batch_size, progress=not args.json)
    pairs = result.pop("pairs")
    d = agent.decoder
    result.update({"checkpoint": str(args.checkpoint), "data": str(args.data), "decoder": {
        "beam": d.beam, "lm": args.lm, "lm_weight": d.lm_weight if agent.lm else 0.0, "bonus": d.bonus}})
    if args.json:
        print(json.dumps(result))
    else:
        print(f"{result['lines']} lines  CER {100 * result['cer']:.2f}%  WER {100 * result['wer']:.2f}%  "
              f"word accuracy {100 * result['word_accuracy']:.2f}%  line accuracy {100 * result['line_accuracy']:.2f}%"
              f"  1-NED {result['one_minus_ned']:.4f}  {result['lines_per_s']:.1f} lines/s  "
              f"(beam {d.beam}{', LM ' + args.lm if args.lm else ''}; {result['normalization']})")
    if args.errors:
        from rapidfuzz.distance import Levenshtein

        worst = sorted(pairs, key=lambda t: -Levenshtein.distance(t[1], t[2]))[:args.errors]
        for src, ref, hyp in worst:
            print(f"{src}\n  ref: {ref}\n  hyp: {hyp}")
    return 0
