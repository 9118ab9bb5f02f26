"""``dawnet flops``: MACs, FLOPs and parameters of a model on an input shape, per module."""

from __future__ import annotations

import argparse

from dawnet.commands import CommandError
from dawnet.commands._types import int_range


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "flops",
        help="Count the exact MACs, FLOPs and parameters of a model, per module.",
        description=(
            "Count the exact MACs, FLOPs and parameters of a model on an input of a given shape, at the "
            "aten level (RNNs, attention and functional calls included), and print a per-module table. "
            "FLOPs are 2 x MACs unless --elementwise is given."
        ),
    )
    p.add_argument("model", help="A registered model name (see `dawnet.list_models()`) or package.module:factory.")
    p.add_argument("--input", required=True, metavar="N,C,H,W",
                   help="Input shape as comma-separated integers, e.g. 1,1,32,128. Repeat the option for "
                        "models with several inputs.", action="append")
    p.add_argument("--backward", action="store_true",
                   help="Also run and count the backward pass (default: forward only).")
    p.add_argument("--elementwise", action="store_true",
                   help="Add element-wise, bias, normalization and activation flops to FLOPs (default: off).")
    p.add_argument("--train", action="store_true",
                   help="Count the model in training mode (default: eval mode under no_grad, which takes "
                        "PyTorch's inference fast paths; --backward implies training-style autograd).")
    p.add_argument("--depth", type=int_range(-1), default=2,
                   help="Deepest module level shown in the table (default: 2; -1 shows every module).")
    p.add_argument("--meta", action="store_true",
                   help="Count on the meta device: no real compute or memory (default: count on CPU).")
    p.add_argument("--json", action="store_true",
                   help="Print one JSON object (macs, flops, params, per_module, ...) instead of the table.")
    p.set_defaults(func=run)


def parse_shape(text: str) -> tuple[int, ...]:
    """'1,1,32,128' -> (1, 1, 32, 128), with an error that says what a shape looks like."""
    try:
        shape = tuple(int(s) for s in text.replace("x", ",").split(",") if s.strip())
    except ValueError:
        shape = ()
    if not shape or any(s <= 0 for s in shape):
        raise CommandError(f"--input {text!r} is not a shape: give positive integers separated by commas, "
                           "e.g. --input 1,1,32,128")
    return shape


def run(args: argparse.Namespace) -> int:
    import contextlib

    import torch

    from dawnet.cost import count
    from dawnet.registry import UnknownModelError, create_model

    shapes = [parse_shape(s) for s in args.input]
    try:
        model = create_model(args.model)
    except UnknownModelError as e:
        raise CommandError(str(e)) from None
    model.train(args.train)
    inputs = [torch.randn(*s) for s in shapes]
    grad = contextlib.nullcontext() if (args.train or args.backward) else torch.no_grad()
    try:
        with grad:
            report = count(model, *inputs, backward=args.backward, elementwise=args.elementwise,
                           device="meta" if args.meta else None)
    except RuntimeError as e:
        raise CommandError(f"{args.model} failed on input {' and '.join(args.input)}: {e}. "
                           "Check the input shape the model expects.") from None
    if args.json:
        print(report.to_json())
    else:
        print(report.table(depth=None if args.depth < 0 else args.depth))
    return 0
