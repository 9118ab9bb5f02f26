"""``dawnet read``: print the text of line images with a recognizer checkpoint."""

from __future__ import annotations

import argparse
import json
import sys

from dawnet.commands import CommandError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "read",
        help="Print the text of each line image with a recognizer checkpoint.",
        description="Read one text line per IMAGE (PNG, JPEG, ...; colour is converted to grayscale) with "
                    "CHECKPOINT and print its text; with several images each line is 'IMAGE<TAB>text'. An "
                    "image that cannot be a text line (blank, empty, too small, a whole page) is reported on "
                    "stderr and the others are still read; the exit status is then 1.",
    )
    p.add_argument("checkpoint", help="A checkpoint written by 'dawnet train' (crnn, attn, ...).")
    p.add_argument("images", nargs="*", metavar="IMAGE", help="Line images (pages with --detector).")
    p.add_argument("--lm", default=None, help="Character LM for shallow fusion (default: none).")
    p.add_argument("--beam", type=int, default=None, help="Beam width (default: 1 = greedy; 10 with --lm).")
    p.add_argument("--lm-weight", type=float, default=0.5, help="LM weight (default: 0.5; used with --lm).")
    p.add_argument("--bonus", type=float, default=None, help="Score per character (default: 0, or 1.0 with --lm).")
    p.add_argument("--json", action="store_true", help="Print one JSON object per image: image, text or error.")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for PyTorch (default: PyTorch's choice; 1 is "
                                                             "often faster on a busy or small machine).")
    from dawnet.ocr.page import add_page_arguments

    add_page_arguments(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from dawnet.commands.eval import configure_decoder, load_recognizer
    from dawnet.commands.train import set_threads
    from dawnet.ocr.agents import LineImageError

    set_threads(args.threads)
    if args.detector:
        from dawnet.ocr.page import run_page_command

        return run_page_command(args)
    if not args.images:
        raise CommandError("give line IMAGEs after CHECKPOINT (or --detector DET.pt for whole pages)")
    agent = load_recognizer(args.checkpoint)
    configure_decoder(agent, args.lm, args.beam, args.lm_weight, args.bonus)
    failed = 0
    for path in args.images:
        try:
            text = agent.infer(path)
        except (LineImageError, FileNotFoundError, ValueError) as e:
            failed += 1
            if args.json:
                print(json.dumps({"image": path, "error": str(e)}))
            else:
                print(f"dawnet read: {path}: {e}", file=sys.stderr)
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
