"""``dawnet read``: print the text of line images with a recognizer checkpoint."""

from __future__ import annotations

import argparse
import json
import sys

from dawnet.commands import CommandError, set_threads
from dawnet.commands._types import finite_float, nonnegative_float, positive_int

EPILOG = """\
exit status: 0 every image read; 1 some images could not be read (each is named on stderr, or as an "error"
object with --json); 2 bad input (options out of range, an unreadable checkpoint, no image readable at all)."""


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "read",
        help="Print the text of each line image with a recognizer checkpoint.",
        description="Read one text line per IMAGE (PNG, JPEG, ...; colour is converted to grayscale) with "
                    "CHECKPOINT and print its text; with several images each line is 'IMAGE<TAB>text'. An "
                    "image that cannot be a text line (blank, empty, too small, a whole page) is reported on "
                    "stderr and the others are still read; the exit status is then 1.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("checkpoint", help="A checkpoint written by 'dawnet train' (crnn, attn, ...).")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="Line images (pages with --detector).")
    p.add_argument("--lm", default=None, help="Character LM for shallow fusion (default: none).")
    p.add_argument("--beam", type=positive_int, default=None, help="Beam width (default: 1 = greedy; 10 with --lm).")
    p.add_argument("--lm-weight", type=nonnegative_float, default=0.5,
                   help="LM weight, >= 0 (default: 0.5; used with --lm).")
    p.add_argument("--bonus", type=finite_float, default=None,
                   help="Score per character (default: 0, or 1.0 with --lm).")
    p.add_argument("--json", action="store_true", help="Print one JSON object per image: image, text or error.")
    p.add_argument("--threads", type=positive_int, default=None,
                   help="CPU threads for PyTorch (default: PyTorch's choice; 1 is often faster on a busy or small "
                        "machine).")
    p.add_argument("--runtime", choices=("torch", "onnx"), default="torch",
                   help="torch (default): CHECKPOINT is a .pt checkpoint; onnx: CHECKPOINT (and --detector/"
                        "--recognizer) are .onnx files from 'dawnet export', run with ONNX Runtime (pip install "
                        "'dawnet[onnx]'); --threads then sets ONNX Runtime's threads.")
    g = p.add_argument_group("pages (detect lines, then read them)")
    g.add_argument("--detector", default=None, metavar="CKPT",
                   help="A text-line detector checkpoint (e.g. DIR/models/yolo.pt from 'dawnet bench'); with it "
                        "each IMAGE is a whole page (default: none, each IMAGE is one line).")
    g.add_argument("--recognizer", default=None, metavar="CKPT",
                   help="The line recognizer checkpoint used with --detector (default: the positional "
                        "CHECKPOINT).")
    g.add_argument("--boxes", action="store_true", help="With --detector: print each line's box and score too.")
    p.set_defaults(func=run)


def _recognizer(args: argparse.Namespace, path: str):
    """The recognizer at ``path``: a checkpoint, or with ``--runtime onnx`` an exported ONNX graph."""
    from dawnet.ocr.reading import configure_decoder, load_recognizer

    if args.runtime == "onnx":
        from dawnet.ocr.onnx import load_recognizer as load_onnx

        agent = load_onnx(path, threads=args.threads)
    else:
        agent = load_recognizer(path)
    configure_decoder(agent, args.lm, args.beam, args.lm_weight, args.bonus)
    return agent


def _report_failure(path: str, error: Exception, as_json: bool) -> None:
    """One image that could not be read: a JSON record on stdout with --json, else a line on stderr."""
    if as_json:
        print(json.dumps({"image": path, "error": str(error)}))
    else:
        print(f"dawnet read: {path}: {error}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from dawnet.ocr.agents import LineImageError

    if args.runtime == "torch":
        set_threads(args.threads)
    if args.detector:
        return read_pages(args)
    if not args.images:
        raise CommandError("give line IMAGEs after CHECKPOINT (or --detector DET.pt for whole pages)")
    agent = _recognizer(args, args.checkpoint)
    failed = 0
    for path in args.images:
        try:
            text = agent.infer(path)
        except (LineImageError, FileNotFoundError, ValueError) as e:
            failed += 1
            _report_failure(path, e, args.json)
            continue
        for note in agent.notes:
            print(f"dawnet read: {path}: note: {note}", file=sys.stderr)
        if args.json:
            print(json.dumps({"image": path, "text": text}))
        elif len(args.images) > 1:
            print(f"{path}\t{text}")
        else:
            print(text)
    if failed == len(args.images):
        raise CommandError(f"no image could be read ({failed} failed; see the messages above)")
    return 1 if failed else 0


def read_pages(args: argparse.Namespace) -> int:
    """``dawnet read --detector DET [--recognizer REC] ...``: the text of whole pages, top to bottom.

    With ``--recognizer`` every positional argument is a page; without it the first positional argument is the
    recognizer (as in ``dawnet read CHECKPOINT IMAGE...``). ``--json`` prints one object per page (text, lines
    with boxes and scores); ``--boxes`` prints ``x0,y0,x1,y1<TAB>score<TAB>text`` lines.
    """
    from dawnet.ocr.page import read_page

    positional = [a for a in [args.checkpoint, *args.images] if a]
    recognizer_path = args.recognizer or (positional.pop(0) if positional else None)
    images = positional
    if recognizer_path is None or not images:
        raise CommandError("page reading needs a recognizer and at least one page: dawnet read --detector "
                           "DET.pt --recognizer REC.pt PAGE.png [PAGE.png ...]")
    if args.runtime == "onnx":
        from dawnet.ocr.onnx import load_detector as load_onnx_detector

        detector = load_onnx_detector(args.detector, threads=args.threads)
    else:
        from dawnet.ocr.detection import load_detector

        detector = load_detector(args.detector)
    recognizer = _recognizer(args, recognizer_path)
    failed = 0
    for path in images:
        try:
            result = read_page(path, detector, recognizer)
        except (FileNotFoundError, ValueError) as e:
            failed += 1
            _report_failure(path, e, args.json)
            continue
        for note in result.skipped:
            print(f"dawnet read: {path}: note: skipped {note}", file=sys.stderr)
        if args.json:
            print(json.dumps({"image": path, **result.to_dict()}))
            continue
        if len(images) > 1:
            print(f"== {path}")
        for line in result.lines:
            if args.boxes:
                x0, y0, x1, y1 = (round(v) for v in line.box)
                print(f"{x0},{y0},{x1},{y1}\t{line.score:.3f}\t{line.text}")
            else:
                print(line.text)
    if failed == len(images):
        raise CommandError(f"no page could be read ({failed} failed; see the messages above)")
    return 1 if failed else 0
