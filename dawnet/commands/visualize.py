"""``dawnet visualize``: what a layer of a checkpoint responds to, or a line its recognizer reads as TEXT."""

from __future__ import annotations

import argparse
import json
import os

from dawnet.commands import CommandError, set_threads
from dawnet.commands._types import finite_float, positive_float, positive_int


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "visualize",
        help="Draw what a layer's channel responds to (Lucid feature visualization), or a line a recognizer "
        "reads as a given text.",
        description="Optimize an image, starting from noise, so that the model in CHECKPOINT maximizes a "
        "channel, a unit or a whole layer (--layer), a class (--class), or reads a text (--read, "
        "for CTC recognizers), and write it as a PNG. The image has exactly the size given (never "
        "resized); recognizers get their own line height. Lucid's defaults: Adam lr 0.05, 512 steps, "
        "FFT + decorrelated colour, random pad/jitter/scale/rotate.",
    )
    p.add_argument("checkpoint", help="A checkpoint written by dawnet (Agent.save or 'dawnet train').")
    what = p.add_argument_group("What to visualize (one of --layer, --class, --read, --list-layers)")
    what.add_argument(
        "--layer",
        default=None,
        help="Dotted layer name as in model.named_modules() (see --list-layers). With --channel: that "
        "channel; with --neuron too: one unit; alone: the whole layer (DeepDream).",
    )
    what.add_argument("--channel", type=int, default=None, help="Channel of --layer to maximize.")
    what.add_argument(
        "--neuron",
        type=int,
        nargs=2,
        metavar=("Y", "X"),
        default=None,
        help="Position of a single unit in --layer's feature map (for sequences, Y=0 and X=time step).",
    )
    what.add_argument(
        "--class",
        dest="label",
        type=int,
        default=None,
        help="Class index whose logit to maximize (classifiers with (N, classes) outputs).",
    )
    what.add_argument(
        "--read",
        default=None,
        metavar="TEXT",
        help="Make a CTC recognizer read TEXT: optimize a line until its greedy decoding is TEXT.",
    )
    what.add_argument("--list-layers", action="store_true", help="Print the model's layer names and exit.")
    how = p.add_argument_group("How")
    how.add_argument(
        "--steps",
        type=positive_int,
        default=None,
        help="Optimization steps (default: 512; with --read at most 1000, stopping once read).",
    )
    how.add_argument(
        "--size",
        type=positive_int,
        nargs="+",
        default=None,
        metavar="PX",
        help="Image size: H or H W (default: the agent's input size; recognizers: their line height and "
        "4 times that width (128 for 32 px lines); with --read a width for the text's length; else 128).",
    )
    how.add_argument("--batch", type=positive_int, default=1, help="Images optimized together (default: 1).")
    how.add_argument("--lr", type=positive_float, default=0.05, help="Adam learning rate (default: 0.05).")
    how.add_argument("--seed", type=int, default=0, help="Random seed (default: 0).")
    how.add_argument(
        "--tv",
        type=finite_float,
        default=None,
        help="Weight of the total-variation penalty (default: 0, or 0.05 with --read).",
    )
    how.add_argument(
        "--transforms",
        choices=("standard", "light", "none"),
        default=None,
        help="Robustness transforms: Lucid's standard set, a light jitter, or none (default: standard; "
        "light with --read, where rotating a line would break it).",
    )
    how.add_argument("--no-fft", action="store_true", help="Optimize pixels instead of an FFT spectrum.")
    how.add_argument("--no-decorrelate", action="store_true", help="Do not decorrelate colours (RGB only).")
    how.add_argument(
        "--init",
        default=None,
        metavar="IMAGE",
        help="Start from this image (DeepDream from a photo or a line) instead of noise; its size is "
        "used as is.",
    )
    how.add_argument(
        "--device", default=None, help="Device to run on (default: cuda if available, else cpu)."
    )
    how.add_argument(
        "--threads", type=positive_int, default=None, help="CPU threads for PyTorch (default: PyTorch's choice)."
    )
    out = p.add_argument_group("Output")
    out.add_argument(
        "--out", default=None, help="PNG to write (the batch side by side). Required unless --list-layers."
    )
    out.add_argument(
        "--figure", default=None, help="Also save a figure (images and objective curve) to this file."
    )
    out.add_argument("--json", action="store_true", help="Print one JSON object with the result.")
    out.add_argument("--quiet", action="store_true", help="No progress bar.")
    p.set_defaults(func=run)


def _load(path: str, device: str | None):
    from dawnet.agent import Agent
    from dawnet.checkpoint import CheckpointError

    if not os.path.exists(path):
        raise CommandError(f"no checkpoint at {path}: pass a file written by Agent.save or 'dawnet train'")
    try:
        agent = Agent.load(path, map_location=device)
    except CheckpointError as e:
        raise CommandError(str(e)) from None
    return agent


def _layer_table(model) -> list[dict]:
    return [{"name": n, "type": type(m).__name__} for n, m in model.named_modules() if n]


def _save_figure(fig, path: str) -> None:
    from dawnet.diagnose.vis import save_figure

    save_figure(fig, path, dpi=120)


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    agent = _load(args.checkpoint, args.device)
    model = agent.model
    if args.list_layers:
        table = _layer_table(model)
        if args.json:
            print(json.dumps(table))
        else:
            for row in table:
                print(f"{row['name']}\t{row['type']}")
        return 0
    chosen = [x for x in (args.layer, args.label, args.read) if x is not None]
    if len(chosen) != 1:
        raise CommandError(
            "say what to visualize with exactly one of --layer NAME [--channel C], --class K or "
            "--read TEXT (or --list-layers)"
        )
    if args.out is None:
        raise CommandError("--out is required: the PNG to write, e.g. --out channel.png")
    if (args.channel is not None or args.neuron is not None) and args.layer is None:
        raise CommandError("--channel and --neuron need --layer")
    if args.neuron is not None and args.channel is None:
        raise CommandError("--neuron Y X needs --channel C")
    if args.size is not None and len(args.size) > 2:
        raise CommandError(f"--size takes H or H W (positive pixels), got {args.size}")
    if args.read is not None:
        result = _read(agent, args)
    else:
        result = _visualize(agent, args)
    result["checkpoint"] = args.checkpoint
    result["out"] = args.out
    if args.json:
        print(json.dumps(result))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0 if result.get("satisfied", True) else 1


def _is_recognizer(agent) -> bool:
    """OCR agents: model input is ink = 1 on paper = 0, while line image files are dark ink on light paper."""
    return hasattr(agent, "charset") and isinstance(getattr(agent.model, "height", None), int)


def _write_images(images, path: str, recognizer: bool) -> None:
    """The batch side by side as one PNG (atomic); a recognizer's lines as dark ink on light paper,
    so that ``dawnet read`` reads the file as the model read the tensor."""
    import torch

    from dawnet.diagnose.optvis.render import tensor_to_pil

    strip = torch.cat(list(images), dim=-1)
    _save_png(tensor_to_pil(1.0 - strip if recognizer else strip), path)


def _input_settings(agent):
    """(channels, (h, w) or None, preprocess) from the agent's saved input conversion."""
    from dawnet.diagnose.optvis.render import model_input_channels

    inp = getattr(agent, "input", None)
    channels = getattr(inp, "channels", None) or getattr(agent.model, "in_chans", None)
    if channels is None:
        try:
            channels = model_input_channels(agent.model)
        except ValueError as e:
            raise CommandError(
                str(e).replace(
                    "pass channels= or an explicit param=",
                    "this model cannot be visualized from the command line",
                )
            ) from None
    size = (inp.height, inp.width) if inp is not None and inp.height and inp.width else None
    preprocess = None
    if inp is not None and (inp.mean != 0.0 or inp.std != 1.0):
        mean, std = float(inp.mean), float(inp.std)

        def preprocess(x):
            return (x - mean) / std

    return channels, size, preprocess


def _default_size(model) -> tuple[int, int]:
    """A recognizer's line height by 4 heights of width (Lucid's 128 px along a 32 px line, and at least the
    model's shortest line); 128 x 128 for other models."""
    height = getattr(model, "height", None)
    if isinstance(height, int) and height > 0:
        return height, max(int(getattr(model, "min_width", 1) or 1), 4 * height)
    return 128, 128


def _size(args, default):
    if args.size is None:
        return default
    return (args.size[0], args.size[0]) if len(args.size) == 1 else tuple(args.size)


def _transforms(kind: str):
    from dawnet.diagnose.optvis import transform as T

    if kind == "standard":
        return T.standard_transforms()
    if kind == "light":
        return T.compose([T.pad(2), T.jitter(4)])
    return False


def _init_image(args, channels, prepare=None):
    if args.init is None:
        return None
    if not os.path.exists(args.init):
        raise CommandError(f"no image at {args.init}: --init takes a PNG/JPEG path")
    if prepare is not None:
        return prepare(args.init)
    from dawnet.diagnose.optvis.param import to_tensor_image
    from dawnet.images import load_image

    return to_tensor_image(load_image(args.init, mode="RGB" if channels == 3 else "L"), channels)


def _visualize(agent, args) -> dict:
    import torch

    from dawnet.diagnose.optvis import objectives as O
    from dawnet.diagnose.optvis import param as P
    from dawnet.diagnose.optvis.render import default_optimizer, render
    from dawnet.diagnose.probe import resolve_layers

    model = agent.model
    if args.layer is not None:
        try:
            resolve_layers(model, [args.layer])
        except KeyError as e:
            raise CommandError(
                str(e.args[0]).replace(
                    "`dawnet diagnose layers`", "`dawnet visualize CHECKPOINT --list-layers`"
                )
            ) from None
        if args.channel is None:
            objective = O.deepdream(args.layer)
        elif args.neuron is not None:
            objective = O.neuron(args.layer, args.channel, args.neuron[0], args.neuron[1])
        else:
            objective = O.channel(args.layer, args.channel)
    else:
        objective = O.class_logit(args.label)
    if args.tv:
        objective = objective - args.tv * O.total_variation()
    channels, agent_size, preprocess = _input_settings(agent)
    recognizer = _is_recognizer(agent)
    init = _init_image(args, channels, _line_reader(agent) if recognizer else None)
    h, w = init.shape[-2:] if init is not None else _size(args, agent_size or _default_size(model))
    height = getattr(model, "height", None)
    if isinstance(height, int) and h != height:
        raise CommandError(
            f"the model reads lines {height} px high, but the image would be {h} px: pass --size {height} W"
        )
    g = torch.Generator().manual_seed(args.seed)
    param = P.image(
        h,
        w,
        batch=args.batch,
        channels=channels,
        fft=not args.no_fft,
        decorrelate=False if args.no_decorrelate else None,
        init=init,
        generator=g,
    )
    steps = args.steps or 512
    try:
        res = render(
            model,
            objective,
            param=param,
            transforms=_transforms(args.transforms or "standard"),
            optimizer=lambda ps: default_optimizer(ps, lr=args.lr),
            steps=steps,
            seed=args.seed,
            progress=not args.quiet,
            preprocess=preprocess,
        )
    except (IndexError, KeyError) as e:
        raise CommandError(str(e.args[0] if e.args else e)) from None
    _write_images(res.final, args.out, recognizer)
    if args.figure:
        _save_figure(res.figure, args.figure)
    return {
        "objective": res.objective,
        "steps": steps,
        "size": [h, w],
        "channels": channels,
        "start": res.history[0],
        "final": res.history[-1],
    }


def _read(agent, args) -> dict:
    from dawnet.diagnose.optvis import inversion as inv
    from dawnet.diagnose.optvis import objectives as O

    charset = getattr(agent, "charset", None)
    if charset is None or not hasattr(charset, "encode"):
        raise CommandError(
            f"--read needs a text recognizer checkpoint (an agent with a charset); "
            f"{type(agent).__name__} has none"
        )
    if getattr(agent.model, "head_kind", "ctc") != "ctc":
        raise CommandError("--read works with CTC recognizers (crnn...); this one has an attention head")
    try:
        target = charset.encode(args.read)
    except ValueError as e:
        raise CommandError(f"--read {args.read!r}: {e}") from None
    if not target:
        raise CommandError("--read needs a non-empty text")
    blank = getattr(charset, "blank", 0)
    height = int(getattr(agent.model, "height", 0) or 0) or None
    channels = getattr(agent.model, "in_chans", None) or 1
    init = _init_image(args, channels, _line_reader(agent))
    if init is None:
        default_w = max(
            getattr(agent.model, "min_width", 1), round(len(args.read) * 0.75 * (height or 32)) + 16
        )
        h, w = _size(args, (height or 32, default_w))
        if height and h != height:
            raise CommandError(
                f"the recognizer reads lines {height} px high: pass --size {height} W (got {h})"
            )
    penalty = (args.tv if args.tv is not None else 0.05) * O.total_variation()
    transforms = _transforms(args.transforms or "light")
    try:
        res = inv.optimize_input(
            agent.model,
            inv.text_target(target, blank=blank, decode=charset.decode),
            init=init,
            steps=args.steps or 1000,
            lr=args.lr,
            penalty=penalty,
            transforms=transforms or None,
            seed=args.seed,
            progress=not args.quiet,
            size=None if init is not None else (h, w),
            channels=channels,
            batch=args.batch,
            fft=None if not args.no_fft else False,
        )
    except ValueError as e:
        raise CommandError(str(e)) from None
    _write_images(res.image, args.out, recognizer=True)
    if args.figure:
        _save_figure(res.figure, args.figure)
    return {
        "target": args.read,
        "read": res.prediction,
        "satisfied": res.satisfied,
        "steps": res.steps,
        "size": list(res.image.shape[-2:]),
        "distance": res.distance,
    }


def _line_reader(agent):
    """Load a line image file exactly as the recognizer's ``infer`` does (height, ink = 1)."""

    def prepare(path):
        return agent.prepare(path)[0].detach().cpu()

    return prepare


def _save_png(img, path: str) -> None:
    from dawnet.atomic import atomic_write

    with atomic_write(path) as f:
        img.save(f, format="PNG")
