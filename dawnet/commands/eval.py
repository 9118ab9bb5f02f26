"""``dawnet eval``: CER, WER, word/line accuracy, 1-NED and lines/s of a recognizer checkpoint on line data."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dawnet.commands import CommandError, set_threads
from dawnet.commands._types import finite_float, nonnegative_float, nonnegative_int, positive_int

EPILOG = """\
A line whose image is blank (every pixel the same: nothing to read) is not scored: it is counted and named
(in --json: "blank", the sources of those lines) and the exit status is 1.
exit status: 0 every line scored; 1 some lines were blank and not scored; 2 bad input (options out of range,
an unreadable checkpoint or data, no line to score), with a one-line message."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "eval",
        help="Measure a recognizer checkpoint: CER, WER, word accuracy, 1-NED, lines/s.",
        description="Read every line of --data with CHECKPOINT and score the text against the ground truth "
                    "(NFC, whitespace runs collapsed; case and punctuation count). --data is any line data "
                    "'dawnet data' reads (a folder of *.png + *.gt.txt, TSV, IAM, PAGE/ALTO, LMDB), a folder "
                    "built by 'dawnet data build' (its test split is used), or a spec name (its test split, "
                    "rendered exactly as 'dawnet data build' does). Greedy decoding unless --beam/--lm.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="A checkpoint written by 'dawnet train' (e.g. runs/crnn-hw-lines-v1/best.pt).")
    p.add_argument("--data", required=True, metavar="DIR", help="Line data to evaluate on.")
    d = p.add_argument_group("decoding")
    d.add_argument("--lm", default=None, help="Character LM (lm.json.gz from 'dawnet train charlm') for shallow "
                                              "fusion (default: none).")
    d.add_argument("--beam", type=positive_int, default=None,
                   help="Beam width (default: 1 = greedy; 10 when --lm is given).")
    d.add_argument("--lm-weight", type=nonnegative_float, default=0.5,
                   help="LM weight, >= 0 (default: 0.5; used with --lm).")
    d.add_argument("--bonus", type=finite_float, default=None, help="Score added per character (default: 0, or 1.0 "
                                                                    "with --lm).")
    p.add_argument("--limit", type=positive_int, default=None, metavar="N",
                   help="Evaluate only the first N lines (default: all).")
    p.add_argument("--batch-size", type=positive_int, default=16, help="Lines per batch (default: 16).")
    p.add_argument("--errors", type=nonnegative_int, default=0, metavar="N",
                   help="Also show the N worst lines (default: 0); with --json they are the list \"errors\".")
    p.add_argument("--json", action="store_true",
                   help="Print exactly one JSON object (cer, wer, lines, lines_per_s, blank, errors, ...).")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for PyTorch (default: PyTorch's choice; 1 is often faster on a busy or small "
                        "machine).")
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                   help="torch (default): CHECKPOINT is a .pt checkpoint; onnx: an .onnx file from 'dawnet "
                        "export', run with ONNX Runtime (pip install 'dawnet[onnx]'); --threads then sets ONNX "
                        "Runtime's threads.")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dawnet.ocr.lines import load_line_data, split_folder
    from dawnet.ocr.reading import configure_decoder, evaluate_lines, load_recognizer

    if args.runtime == "onnx":
        from dawnet.ocr.onnx import load_recognizer as load_onnx

        agent = load_onnx(args.checkpoint, threads=args.threads)
    else:
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
    pairs, blank = result.pop("pairs"), result.pop("blank")
    if not pairs:
        raise CommandError(f"all {len(blank)} lines of {args.data} are blank images (every pixel the same value): "
                           "nothing to score; check that the images hold the text lines")
    d = agent.decoder
    result.update({"checkpoint": str(args.checkpoint), "data": str(args.data), "decoder": {
        "beam": d.beam, "lm": args.lm, "lm_weight": d.lm_weight if agent.lm else 0.0, "bonus": d.bonus},
        "blank_lines": len(blank), "blank": blank})
    worst = []
    if args.errors:
        from rapidfuzz.distance import Levenshtein

        scored = [(Levenshtein.distance(ref, hyp), src, ref, hyp) for src, ref, hyp in pairs]
        worst = sorted(scored, key=lambda t: -t[0])[:args.errors]
    if args.json:
        if args.errors:
            result["errors"] = [{"source": src, "ref": ref, "hyp": hyp, "edits": n} for n, src, ref, hyp in worst]
        print(json.dumps(result))
    else:
        print(f"{result['lines']} lines  CER {100 * result['cer']:.2f}%  WER {100 * result['wer']:.2f}%  "
              f"word accuracy {100 * result['word_accuracy']:.2f}%  line accuracy {100 * result['line_accuracy']:.2f}%"
              f"  1-NED {result['one_minus_ned']:.4f}  {result['lines_per_s']:.1f} lines/s  "
              f"(beam {d.beam}{', LM ' + args.lm if args.lm else ''}; {result['normalization']})")
        for _, src, ref, hyp in worst:
            print(f"{src}\n  ref: {ref}\n  hyp: {hyp}")
    if blank:
        shown = ", ".join(blank[:5]) + (f", ... ({len(blank) - 5} more)" if len(blank) > 5 else "")
        print(f"dawnet eval: {len(blank)} blank line image(s) (every pixel the same value) not scored: {shown}",
              file=sys.stderr)
        return 1
    return 0
