"""``dawnet export``: write a recognizer or detector checkpoint as a self-describing ONNX file."""

from __future__ import annotations

import argparse

from dawnet.commands import CommandError


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "export",
        help="Export a recognizer or detector checkpoint to ONNX (for ONNX Runtime).",
        description="Write CHECKPOINT (a recognizer: crnn, attn, ...; or the yolo line detector) as an ONNX file "
                    "with dynamic batch (and, for lines, width: padded lines keep their width mask). Its metadata "
                    "(key 'dawnet', JSON) holds the charset, input height and normalization, decoder kind, and for "
                    "the detector the letterbox size, stride and score/NMS settings, so the file is usable alone. "
                    "An attention recognizer is written as two files: OUT (the encoder) and OUT's "
                    "'.decoder.onnx' (one decoder step). The export is checked against PyTorch on a seeded probe "
                    "batch before it is kept (float32: within 1e-4, greedy outputs equal). Needs "
                    "pip install 'dawnet[onnx]'.",
    )
    p.add_argument("checkpoint", help="A checkpoint from 'dawnet train' or 'dawnet bench' (e.g. DIR/models/crnn.pt).")
    p.add_argument("--out", required=True, metavar="FILE", help="The ONNX file to write (e.g. crnn.onnx).")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset, 14-20 (default: 17).")
    q = p.add_mutually_exclusive_group()
    q.add_argument("--fp16", action="store_true", help="Store float16 weights and compute (inputs and outputs stay "
                                                       "float32); refused unless it holds parity on the probe batch.")
    q.add_argument("--quantize", choices=["int8"], default=None,
                   help="ONNX Runtime dynamic quantization: int8 weights of the matmuls and LSTMs (default: none). "
                        "Not exact: the measured difference is printed and stored in the metadata.")
    p.add_argument("--json", action="store_true", help="Print one JSON object (files, sizes, parity, metadata).")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import json

    try:
        from dawnet.ocr.onnx.export import export_onnx
    except ImportError as e:
        raise CommandError(str(e)) from None
    try:
        result = export_onnx(args.checkpoint, args.out, opset=args.opset, fp16=args.fp16, quantize=args.quantize)
    except ImportError as e:  # onnx / onnxruntime / onnxconverter-common missing: the message names the install
        raise CommandError(str(e)) from None
    sizes = {str(f): f.stat().st_size for f in result.files}
    if args.json:
        print(json.dumps({"files": sizes, "parity": result.parity, "metadata": result.metadata}))
        return 0
    meta = result.metadata
    what = meta.get("model") or meta["kind"]
    for f, size in sizes.items():
        print(f"wrote {f} ({size / 1e6:.2f} MB)")
    print(f"{what} ({meta['kind']}, {meta['dtype']}, opset {meta['opset']}): {result.summary()}")
    return 0
