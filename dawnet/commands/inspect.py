"""``dawnet inspect``: a local web page to draw on and augment an image and watch maps and outputs change.

dawnet inspect CHECKPOINT [--data DIR] [--image IMG] [--host 127.0.0.1] [--port 0]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from dawnet.commands import CommandError, set_threads
from dawnet.commands._types import int_range, positive_float, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "inspect",
        help="Open a live inspector page: draw on an image and watch feature maps and outputs change.",
        description=(
            "Start a local web app for a checkpoint and print its URL. The page shows the image the model "
            "reads; draw and erase with the mouse, pick data set samples, upload an image, cut a region "
            "from another image and paste it, and move augmentation sliders (noise, blur, rotation, scale, "
            "contrast, elastic). Every change updates the chosen layer's feature maps, the output (text "
            "with per-character confidence, top-k classes, or boxes) and each channel's change against the "
            "original image, with the measured latency. Clicking a map cell outlines its receptive field; a"
            " channel's top-k data set patches are one click away. The server binds 127.0.0.1 by default; "
            "any other address requires the token it prints. Stop it with Ctrl-C."
        ),
    )
    p.add_argument(
        "checkpoint", help="A checkpoint written by Agent.save (a recognizer, classifier or detector)."
    )
    p.add_argument(
        "--data",
        metavar="DIR",
        help="A folder of line data (png + gt.txt, labels.tsv, PAGE XML, ALTO, LMDB, or a built data set, "
        "whose --split is used) or of images, to pick samples from and rank top-k patches over. "
        "Paths the page sends are read only inside this folder (default: none).",
    )
    p.add_argument(
        "--split",
        default=None,
        help="For a built data set folder: the split to use (default: val, else test, else train).",
    )
    p.add_argument(
        "--image",
        metavar="IMG",
        help="The first image to show (default: the first data sample, or a rendered line).",
    )
    p.add_argument(
        "--layer",
        default=None,
        help="The layer to show first (default: a middle conv layer; see `dawnet diagnose layers`).",
    )
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="The address to listen on (default: 127.0.0.1, this machine only). Any other address "
        "requires a token on every request.",
    )
    p.add_argument(
        "--port", type=int_range(0, 65535), default=0, help="The port to listen on (default: 0, any free port)."
    )
    p.add_argument(
        "--token",
        default=None,
        help="The access token (default: generated and printed when --host is not loopback; none on "
        "loopback unless given).",
    )
    p.add_argument(
        "--max-pixels",
        type=positive_int,
        default=None,
        help="The largest image (width x height) decoded from uploads and data (default: 16,000,000).",
    )
    p.add_argument(
        "--max-upload-mb", type=positive_float, default=16.0, help="The largest request body in MiB (default: 16)."
    )
    p.add_argument(
        "--top-images",
        type=positive_int,
        default=256,
        help="How many data set images top-k patches are ranked over (default: 256).",
    )
    p.add_argument("--device", default="cpu", help="Device to run the model on (default: cpu).")
    p.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="PyTorch CPU threads (default: 1: one image at a time is fastest on one thread, above all "
        "on a busy machine).",
    )
    p.add_argument(
        "--trust-code",
        action="store_true",
        help="Allow the checkpoint to import model/agent code outside dawnet and torch (default: off).",
    )
    p.add_argument(
        "--json",
        action="store_true",
        help="Print one JSON object with the URL and the token (for scripts) instead of text.",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        from dawnet.inspector import open_session
        from dawnet.inspector.app import check_token
        from dawnet.inspector.errors import InspectorError
        from dawnet.inspector.images import MAX_PIXELS
        from dawnet.inspector.server import InspectorServer
    except ImportError as e:
        raise CommandError(
            f"the inspector needs the `inspect` extra ({e.name} is missing): pip install 'dawnet[inspect]'"
        ) from None
    set_threads(args.threads)
    try:
        check_token(args.token)
    except ValueError as e:
        raise CommandError(f"--token: {e}") from None
    if args.image and not Path(args.image).is_file():
        raise CommandError(f"image {args.image} does not exist")
    try:
        session = open_session(
            args.checkpoint,
            data=args.data,
            image=args.image,
            layer=args.layer,
            device=args.device,
            split=args.split,
            trust_code=args.trust_code,
            max_pixels=args.max_pixels or MAX_PIXELS,
            top_images=args.top_images,
        )
    except (FileNotFoundError, InspectorError, KeyError) as e:
        raise CommandError(str(e).strip("'\"")) from None
    except (
        Exception
    ) as e:  # a corrupt checkpoint, an unknown model: name the file and why, without a traceback
        raise CommandError(f"cannot open {args.checkpoint} in the inspector: {e}") from None
    try:
        server = InspectorServer(
            session,
            host=args.host,
            port=args.port,
            token=args.token,
            max_body=int(args.max_upload_mb * 1024 * 1024),
            data_root=args.data,
        )
    except (OSError, ValueError) as e:
        raise CommandError(str(e)) from None
    if args.json:
        print(
            json.dumps({"url": server.url, "host": args.host, "port": server.port, "token": server.token}),
            flush=True,
        )
    else:
        print(
            f"dawnet inspect: {session.name} ({session.kind}), {len(session.samples)} data samples, "
            f"layer {session.view.layer}",
            flush=True,
        )
        print(f"Open {server.url}", flush=True)
        if server.token:
            print("Every request needs this token (it is in the URL); keep it secret.", flush=True)
        print("Press Ctrl-C to stop.", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
