"""``dawnet diagnose``: figures of what a checkpoint's layers respond to, and receptive fields.

    dawnet diagnose CHECKPOINT --image IMG --layer NAME [--channels 0 5 9] --out DIR
    dawnet diagnose rf CHECKPOINT --layer NAME [--image IMG | --input-shape C,H,W] [--json]
    dawnet diagnose layers CHECKPOINT
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

from dawnet.commands import CommandError, set_threads
from dawnet.commands._types import nonnegative_int, positive_int

MODES = ("rf", "layers")


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "diagnose",
        help="Draw what a checkpoint's layers respond to; print receptive fields.",
        description=(
            "Diagnose a trained model from its checkpoint. With an image, write figures for each --layer: the "
            "feature maps, the strongest channels' maps resampled onto the image, the gradient sensitivity of "
            "those channels, the layer's weights, plus biases and activation histograms, and a report.json. "
            "`dawnet diagnose rf CHECKPOINT --layer NAME` prints the layer's receptive field per axis (height "
            "and width), analytic and gradient-measured, cross-checked. `dawnet diagnose layers CHECKPOINT` "
            "lists the layer names."
        ),
        usage="dawnet diagnose [rf | layers] CHECKPOINT [options]",
    )
    p.add_argument("target", nargs="+", metavar="[rf|layers] CHECKPOINT",
                   help="A checkpoint written by Agent.save, optionally preceded by the mode `rf` or `layers`.")
    p.add_argument("--image", help="An image file to diagnose (any format Pillow reads); the checkpoint's agent "
                                   "prepares it as for inference. Required for figures.")
    p.add_argument("--layer", action="append", default=[], metavar="NAME",
                   help="A dotted layer name (see `dawnet diagnose layers`); repeat for several layers. "
                        "`output` means the model's output.")
    p.add_argument("--channels", type=int, nargs="+", metavar="C",
                   help="Channels (units, for recurrent layers; classes, for `output`) to draw "
                        "(default: the --top most active ones).")
    p.add_argument("--top", type=positive_int, default=16,
                   help="Without --channels, draw the channels with the largest mean activation "
                        "(default: 16).")
    p.add_argument("--sensitivity", type=nonnegative_int, default=3,
                   help="Sensitivity maps for this many of the drawn channels (default: 3; 0 skips them).")
    p.add_argument("--out", default="diagnose", help="Folder for the figures and report.json (default: ./diagnose).")
    p.add_argument("--input-shape", metavar="C,H,W",
                   help="For `rf` without --image: the input shape, e.g. 1,32,128 (default: from the checkpoint's "
                        "input settings when it has them).")
    p.add_argument("--device", default="cpu", help="Device to run on (default: cpu).")
    p.add_argument("--threads", type=positive_int, default=1,
                   help="PyTorch CPU threads (default: 1: one image at a time is fastest on one thread; on a busy "
                        "machine two threads made each forward pass 70 times slower).")
    p.add_argument("--trust-code", action="store_true",
                   help="Allow the checkpoint to import model/agent code outside dawnet and torch (default: off).")
    p.add_argument("--json", action="store_true", help="Print one JSON object instead of text.")
    p.set_defaults(func=run)


def _split_target(target: list[str]) -> tuple[str, str]:
    if len(target) == 1:
        return "figures", target[0]
    if len(target) == 2 and target[0] in MODES:
        return target[0], target[1]
    raise CommandError(f"expected `[rf|layers] CHECKPOINT`, got {' '.join(target)!r}")


def _load_agent(path: str, device: str, trust_code: bool):
    import dawnet

    if not Path(path).exists():
        raise CommandError(f"checkpoint {path} does not exist; give the path of a file written by Agent.save")
    try:
        return dawnet.Agent.load(path, map_location=device, trust_code=trust_code)
    except (FileNotFoundError, CommandError):
        raise
    except Exception as e:  # corrupt file, unknown model: say which file and why, without a traceback
        raise CommandError(f"cannot load checkpoint {path}: {e}") from None


def _prepared(agent, image: str) -> tuple:
    if not Path(image).exists():
        raise CommandError(f"image {image} does not exist")
    try:
        inputs = agent.prepare(image)
    except (ValueError, TypeError, OSError) as e:
        raise CommandError(f"cannot prepare {image} for this model: {e}") from None
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    import torch

    if not inputs or not isinstance(inputs[0], torch.Tensor) or inputs[0].dim() != 4:
        raise CommandError("the agent's prepare() must return the image batch (1, C, H, W) first")
    return tuple(t.to(agent.device) if isinstance(t, torch.Tensor) else t for t in inputs)


def _input_shape(args, agent) -> tuple[tuple[int, ...], Any]:
    from dawnet.diagnose.forward import forward_with

    if args.image:
        inputs = _prepared(agent, args.image)
        return tuple(inputs[0].shape[1:]), forward_with(inputs[1:])
    if args.input_shape:
        try:
            shape = tuple(int(v) for v in args.input_shape.replace("x", ",").split(",") if v.strip())
        except ValueError:
            shape = ()
        if len(shape) not in (2, 3) or any(s <= 0 for s in shape):
            raise CommandError(f"--input-shape {args.input_shape!r} is not C,H,W (e.g. 1,32,128)")
        return shape, _line_forward(agent)
    spec = getattr(agent, "input", None)
    model = agent.model
    if spec is not None and spec.height and spec.width:
        return (spec.channels or 1, spec.height, spec.width), None
    height = getattr(model, "height", None)
    if height:
        chans = getattr(model, "in_chans", 1)
        return (int(chans), int(height), int(height) * 8), _line_forward(agent)
    raise CommandError("the input shape is unknown: give --image IMG or --input-shape C,H,W")


def _line_forward(agent):
    """Recognizers take (x, widths); give them the full width of each random input."""
    import inspect

    import torch

    try:
        params = list(inspect.signature(agent.model.forward).parameters)
    except (TypeError, ValueError):
        params = []
    if "widths" in params:
        return lambda m, x: m(x, torch.full((x.shape[0],), x.shape[-1], device=x.device))
    return None


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", name) or "output"


def run(args: argparse.Namespace) -> int:
    mode, ckpt = _split_target(args.target)
    set_threads(args.threads)
    agent = _load_agent(ckpt, args.device, args.trust_code)
    if mode == "layers":
        return _run_layers(agent, args)
    if not args.layer:
        raise CommandError("give at least one --layer NAME (list them with `dawnet diagnose layers CHECKPOINT`)")
    if mode == "rf":
        return _run_rf(agent, args)
    if not args.image:
        raise CommandError("figures need --image IMG (or use `dawnet diagnose rf` for receptive fields)")
    return _run_figures(agent, args)


def _run_layers(agent, args) -> int:
    from dawnet.diagnose.probe import unwrap

    rows = [{"name": n, "type": type(m).__name__, "params": sum(p.numel() for p in m.parameters(recurse=False))}
            for n, m in unwrap(agent.model).named_modules() if n]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        width = max((len(r["name"]) for r in rows), default=4)
        for r in rows:
            print(f"{r['name']:<{width}}  {r['type']}")
    return 0


def _run_rf(agent, args) -> int:
    from dawnet.diagnose.receptive_field import receptive_field

    shape, forward = _input_shape(args, agent)
    results = [receptive_field(agent.model, layer, shape, forward=forward) for layer in args.layer]
    if args.json:
        out = [r.to_dict() for r in results]
        print(json.dumps(out[0] if len(out) == 1 else out, indent=2))
        return 0
    for r in results:
        print(r)
        if r.empirical is not None:
            func = ", ".join(f"{a} {v['functional_size']:g}" for a, v in r.empirical.items())
            eff = ", ".join(f"{a} {v['effective_size']:g}" for a, v in r.empirical.items())
            print(f"  with its own weights the model reads: {func} px (90% of gradient mass: {eff} px)")
    return 0


def _run_figures(agent, args) -> int:
    import torch

    from dawnet.atomic import atomic_write_text
    from dawnet.diagnose import vis
    from dawnet.diagnose.forward import eval_mode, forward_with
    from dawnet.diagnose.layout import canonical, feature_layout
    from dawnet.diagnose.probe import probe, resolve_layers, unwrap
    from dawnet.diagnose.receptive_field import receptive_field, to_input_space
    from dawnet.diagnose.sensitivity import channel, sensitivity

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    inputs = _prepared(agent, args.image)
    x = inputs[0]
    forward = forward_with(inputs[1:])
    model = agent.model
    modules = resolve_layers(model, args.layer)
    files: list[str] = []
    report: dict[str, Any] = {"checkpoint": args.target[-1], "image": args.image, "input_shape": list(x.shape),
                              "layers": {}}

    def save(fig, name):
        path = out_dir / name
        vis.save_figure(fig, path)
        files.append(str(path))

    with eval_mode(model), torch.no_grad(), probe(model, args.layer) as p:
        outputs = forward(model, x)
    for layer in args.layer:  # check every request before drawing anything
        n_ch = canonical(p[layer], feature_layout(modules[layer], p[layer], None)).shape[1]
        bad = [c for c in args.channels or [] if not 0 <= c < n_ch]
        if bad:
            raise CommandError(f"channels {bad} are out of range: layer {layer!r} has {n_ch} channels")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, max(1.5, 10 * x.shape[-2] / x.shape[-1] + 0.5)), layout="constrained")
    vis.show_image(fig.add_subplot(), x[0].cpu(), f"model input {tuple(x.shape[1:])}")
    save(fig, "input.png")
    try:
        answer = agent.postprocess(outputs, inputs)
        if isinstance(answer, torch.Tensor):
            answer = answer.tolist()
        report["answer"] = answer if isinstance(answer, (str, int, float, list, dict)) else repr(answer)
    except Exception as e:  # a diagnosis must not fail because the answer cannot be formatted
        report["answer_error"] = str(e)
    hists = {}
    for layer in args.layer:
        t = p[layer]
        lay = feature_layout(modules[layer], t, None)
        f = canonical(t, lay)[0].float().cpu()  # (C, *spatial)
        hists[layer] = f
        n_ch = f.shape[0]
        if args.channels:
            chans = list(args.channels)
        else:
            chans = f.reshape(n_ch, -1).mean(1).topk(min(args.top, n_ch)).indices.tolist()
        tag = _safe(layer)
        entry: dict[str, Any] = {"layout": lay, "shape": list(t.shape), "channels": chans}
        if f.dim() == 1:  # a vector (N, C): its values say it all
            entry["values"] = {c: float(f[c]) for c in chans}
        how = "chosen channels" if args.channels else f"top {len(chans)} channels by mean activation"
        if f.dim() == 3:
            save(vis.feature_maps(f, chans, title=f"{layer}: {how}"), f"{tag}_maps.png")
        elif f.dim() == 2:
            save(vis.feature_maps(f.T, chans, layout="NTC", title=f"{layer}: {how} over time"), f"{tag}_maps.png")
        rf = None
        if f.dim() >= 2:
            with torch.enable_grad():
                rf = receptive_field(model, layer, tuple(x.shape[1:]), forward=forward, layout=lay)
            entry["receptive_field"] = rf.to_dict()
            best = chans[0]
            save(vis.heatmap_overlay(x[0].cpu(), to_input_space(f[best], rf),
                                     title=f"{layer} channel {best} on the input (aligned by receptive field)"),
                 f"{tag}_c{best}_on_input.png")
        for c in chans[:max(0, args.sensitivity)]:
            s = sensitivity(model, x, channel(layer, c, layout=lay), forward=forward)
            save(s.figure(x[0].cpu()), f"{tag}_c{c}_sensitivity.png")
        weight = _conv_weight(modules[layer]) if modules[layer] is not unwrap(model) else None
        if weight is not None:
            save(vis.conv_weights(weight, title=f"{layer} weights"), f"{tag}_weights.png")
        report["layers"][layer] = entry
    save(vis.activation_histograms(hists), "activation_histograms.png")
    try:
        save(vis.biases(model), "biases.png")
    except ValueError:
        pass  # a model without biases has no bias figure
    report["files"] = files
    atomic_write_text(out_dir / "report.json", json.dumps(report, indent=2, default=str))
    files.append(str(out_dir / "report.json"))
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        if "answer" in report:
            print(f"model answer: {report['answer']!r}")
        for layer, entry in report["layers"].items():
            rf = entry.get("receptive_field")
            if rf:
                axes = "; ".join(f"{a} {v['size'] if v['size'] is not None else 'whole'}/{v['jump']:g}"
                                 for a, v in rf["axes"].items())
                print(f"{layer}: {entry['shape']} receptive field (size/jump) {axes}")
        print(f"wrote {len(files)} files to {out_dir}/")
    return 0


def _conv_weight(module):
    """The weight of a conv or linear layer, or of the first conv inside a block (e.g. conv-norm-act)."""
    from torch import nn

    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
        return module.weight
    for m in module.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            return m.weight
    return None
