"""Export a recognizer or detector checkpoint to ONNX, checked against PyTorch before the file is kept.

Exporter: torch's TorchScript-based one (``torch.onnx.export(..., dynamo=False)``). It traces the model as it
is: a padded example batch fixes the masked code path (every layer multiplies by the padded-width mask; on an
unpadded batch the mask is all ones, which changes no value), and the BiLSTM's packed sequences become ONNX
``LSTM`` nodes with ``sequence_lens``, so padded lines read exactly as in PyTorch. The dynamo exporter would
need ``onnxscript`` and a ``torch.export`` graph, which the model's data-dependent input checks and
pack/no-pack switch do not give without rewriting the model.

Graphs (inputs -> outputs, ``N`` batch, ``W`` width and ``T`` steps dynamic):

    ctc          images (N, 1, H, W) f32, widths (N,) i64 -> log_probs (N, T, C), lengths (N,)
    attention    encoder: images, widths -> memory (N, T, D), lengths (N,), keys (N, T, A)
                 step (X.decoder.onnx): prev (N,) i64, h, c[, context], memory, keys, mask (N, T) bool
                                        -> logits (N, C), h_out, c_out, context_out
    detector     images (N, 1, S, S) f32 -> outputs (N, 5, S/stride, S/stride)

The attention decoder is exported as one step, not as a whole decoding loop: beam search and LM fusion need
each step's scores in the host (as ``dawnet.ocr.decode.attention_beam_search`` uses them), a traced loop would
freeze one greedy path, and the step graph is small (about 0.1 ms per call), so greedy decoding in the host
costs little more than a loop inside the graph would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import sys
import tempfile
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

import dawnet
from dawnet.ocr.onnx.meta import FORMAT, META_KEY, VERSION, MissingDependencyError, OnnxFileError, require

__all__ = ["export_onnx", "ExportResult", "decoder_path", "FP32_TOLERANCE", "FP16_TOLERANCE", "DEFAULT_OPSET"]

DEFAULT_OPSET = 17
FP32_TOLERANCE = 1e-4  # max abs difference of log-probs / logits / raw detector outputs from PyTorch
FP16_TOLERANCE = 2e-2  # --fp16 is refused beyond this, or when a greedy transcription changes
NORMALIZATION = {"layout": "(N, 1, H, W) float32, grayscale", "ink": 1.0, "paper": 0.0,
                 "formula": "1 - gray / 255 after resizing to the model height, aspect kept (PIL bilinear)"}


@dataclass
class ExportResult:
    """What :func:`export_onnx` wrote and how close it reads to PyTorch on a seeded probe batch."""

    files: list[Path]
    metadata: dict
    parity: dict = field(default_factory=dict)

    def summary(self) -> str:
        p = self.parity
        text = f"max |onnx - torch| {p['max_abs']:.2e} ({p['compared']})"
        if "box_max_px" in p:
            return text + (f"; same number of boxes after NMS on {p['greedy_equal']}/{p['lines']} pages, within "
                           f"{p['box_max_px']:.3f} px")
        return text + f"; greedy outputs equal on {p['greedy_equal']}/{p['lines']} probe lines"


def decoder_path(path: str | os.PathLike) -> Path:
    """Where the decoder step of an attention export lives: ``X.onnx`` -> ``X.decoder.onnx``."""
    path = Path(path)
    return path.with_name(path.stem + ".decoder.onnx") if path.suffix == ".onnx" else path.with_name(
        path.name + ".decoder.onnx")


def export_onnx(source, out: str | os.PathLike, *, opset: int = DEFAULT_OPSET, fp16: bool = False,
                quantize: str | None = None) -> ExportResult:
    """Export a checkpoint (path) or agent (CTC, attention or detection) to ``out``.

    The fp32 graph is always checked first: on a seeded probe batch (padded lines of three widths, or two
    pages) its outputs must be within :data:`FP32_TOLERANCE` of PyTorch and every greedy transcription equal,
    else nothing is written. ``fp16=True`` converts it to float16 (float32 inputs/outputs) and is refused unless
    it too holds parity (within :data:`FP16_TOLERANCE`, greedy equal). ``quantize="int8"`` applies ONNX Runtime
    dynamic quantization (int8 weights of MatMul/Gemm/LSTM, activations quantized per call); its measured
    difference is stored in the metadata, since int8 is never exact.
    """
    require("onnx")
    require("onnxruntime")
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be 'int8' or None, got {quantize!r}")
    if fp16 and quantize:
        raise ValueError("choose --fp16 or --quantize int8, not both")
    if not isinstance(opset, int) or not 14 <= opset <= 20:
        raise ValueError(f"opset must be an integer from 14 to 20 (LSTM with sequence_lens, bool masks), got {opset!r}")
    agent = _load_agent(source)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    model = agent.model
    was = model.training
    model.eval()
    try:
        with tempfile.TemporaryDirectory(prefix=".dawnet-onnx-", dir=out.parent) as tmp:
            raw = Path(tmp) / out.name
            meta = _export_graphs(agent, raw, opset)
            parity = _check(agent, raw, meta, FP32_TOLERANCE, "float32")
            if fp16:
                _convert(raw, meta, "float16")
                parity = _check(agent, raw, meta, FP16_TOLERANCE, "float16")
            elif quantize:
                _convert(raw, meta, "int8")
                parity = _check(agent, raw, meta, None, "int8")
            meta["parity"] = parity
            files = _finish(raw, out, meta)
    finally:
        model.train(was)
    return ExportResult(files, meta, parity)


# -- loading and graphs -------------------------------------------------------------------------------------

def _kind(agent) -> str:
    from dawnet.ocr.agents import AttentionAgent, CTCAgent
    from dawnet.ocr.detection import DetectionAgent

    if not isinstance(getattr(agent, "model", None), nn.Module):
        raise ValueError(f"cannot export a {type(agent).__name__}: its model is not a PyTorch module (an ONNX file "
                         "is exported already); export the checkpoint it came from")
    if isinstance(agent, CTCAgent):
        return "ctc"
    if isinstance(agent, AttentionAgent):
        return "attention"
    if isinstance(agent, DetectionAgent):
        return "detector"
    raise ValueError(f"cannot export a {type(agent).__name__}: export a recognizer (crnn, attn, ...) or the "
                     "text-line detector (yolo)")


def _load_agent(source):
    if not isinstance(source, (str, os.PathLike)):
        _kind(source)
        return source
    from dawnet.agent import Agent
    from dawnet.checkpoint import CheckpointError, load_checkpoint

    state = load_checkpoint(source, map_location="cpu")  # missing / corrupt files get load_checkpoint's errors
    if not isinstance(state, dict) or "agent" not in state:
        raise ValueError(f"{source} is not a dawnet checkpoint (no agent in it); pass a file from 'dawnet train' "
                         "or 'dawnet bench'")
    del state
    try:
        agent = Agent.load(source, map_location="cpu")
    except CheckpointError as e:
        raise ValueError(str(e)) from None
    _kind(agent)
    return agent


class _Encoder(nn.Module):
    """Attention recognizer up to the decoder: features, valid steps and the attention keys."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, images, widths):
        memory, lengths = self.model.forward_features(images, widths)
        return memory, lengths, self.model.head.mem_proj(memory)


class _Step(nn.Module):
    """One attention decoder step with the state as separate tensors."""

    def __init__(self, head):
        super().__init__()
        self.head = head

    def forward(self, prev, h, c, context, memory, keys, mask):
        logits, (h, c, context) = self.head.step(prev, (h, c, context), memory, keys, mask)
        return logits, h, c, context


def _export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str], dynamic: dict,
            opset: int) -> None:
    module.eval()
    with warnings.catch_warnings(), torch.no_grad(), _quiet_stderr():
        warnings.simplefilter("ignore")  # tracer warnings about the (deliberately) frozen padded branch
        torch.onnx.export(module, args, str(path), dynamo=False, opset_version=opset, input_names=inputs,
                          output_names=outputs, dynamic_axes=dynamic, do_constant_folding=True)


@contextlib.contextmanager
def _quiet_stderr():
    """Hold back what C++ prints on file descriptor 2 (the exporter's shape-inference notes about PackPadded,
    which are expected here); if the export fails, it is printed after all."""
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # no real stderr (captured): nothing to hold back
        yield
        return
    sys.stderr.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), fd)
        try:
            yield
        except BaseException:
            os.dup2(saved, fd)
            held.seek(0)
            sys.stderr.write(held.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, fd)
            os.close(saved)


def _probe_lines(model, n: int = 3, seed: int = 0):
    """Seeded padded line batch: widths W, ~0.7 W and ~0.4 W (all >= the model's minimum)."""
    g = torch.Generator().manual_seed(seed)
    w = max(int(model.min_width), 6 * int(model.height))
    widths = torch.tensor([max(int(model.min_width), int(w * f)) for f in (1.0, 0.7, 0.4, 0.85, 0.55)[:n]])
    x = torch.rand(n, int(model.in_chans), int(model.height), int(widths.max()), generator=g)
    x = x * (torch.arange(x.shape[-1])[None, None, None, :] < widths[:, None, None, None])
    return x, widths


def _export_graphs(agent, path: Path, opset: int) -> dict:
    from dawnet.registry import model_spec

    kind = _kind(agent)
    model = agent.model
    spec = model_spec(model) or {}
    meta = {"format": FORMAT, "version": VERSION, "kind": kind, "model": spec.get("name"),
            "model_kwargs": spec.get("kwargs", {}), "opset": opset, "dtype": "float32",
            "dawnet_version": dawnet.__version__, "torch_version": torch.__version__,
            "python": platform.python_version()}
    if kind == "detector":
        s = int(agent.size)
        _export(model, (torch.rand(2, 1, s, s),), path, ["images"], ["outputs"],
                {"images": {0: "batch"}, "outputs": {0: "batch"}}, opset)
        meta.update({"task": "detector", "size": s, "stride": int(agent.stride),
                     "score_threshold": agent.score_threshold, "iou_threshold": agent.iou_threshold,
                     "vote_threshold": agent.vote_threshold, "max_det": agent.max_det,
                     "normalization": {"layout": f"(N, 1, {s}, {s}) float32, grayscale page letterboxed to {s} px "
                                                 "(longer side, centred)", "ink": 1.0, "paper": 0.0,
                                       "formula": "1 - gray / 255, PIL bilinear resize, blank canvas 0"},
                     "outputs": "objectness logit + log(left, top, right, bottom / stride) per grid point"})
        return meta
    x, widths = _probe_lines(model, 2, seed=1)
    meta.update({"task": "recognizer", "charset": agent.charset.to_dict(), "height": int(model.height),
                 "in_chans": int(model.in_chans), "min_width": int(model.min_width), "num_classes": model.num_classes,
                 "normalization": NORMALIZATION, "decoding": asdict(agent.decoder)})
    line_axes = {"images": {0: "batch", 3: "width"}, "widths": {0: "batch"}, "lengths": {0: "batch"}}
    if kind == "ctc":
        meta.update({"decoder": "ctc", "blank": agent.charset.blank})
        _export(model, (x, widths), path, ["images", "widths"], ["log_probs", "lengths"],
                {**line_axes, "log_probs": {0: "batch", 1: "steps"}}, opset)
        return meta
    head = model.head
    meta.update({"decoder": "attention", "attention": head.attention, "pad_id": head.pad_id, "end_id": head.end_id,
                 "start_id": head.start_id, "max_length": model.max_length, "memory_dim": head.in_dim,
                 "hidden": head.hidden, "decoder_file": decoder_path(path).name})
    _export(_Encoder(model), (x, widths), path, ["images", "widths"], ["memory", "lengths", "keys"],
            {**line_axes, "memory": {0: "batch", 1: "steps"}, "keys": {0: "batch", 1: "steps"}}, opset)
    with torch.no_grad():
        memory, lengths = model.forward_features(x, widths)
        state, keys, mask = head.init_state(memory, lengths)
    prev = torch.full((memory.shape[0],), head.start_id, dtype=torch.long)
    rows = {0: "rows"}
    seq = {0: "rows", 1: "steps"}
    _export(_Step(head), (prev, *state, memory, keys, mask), decoder_path(path),
            ["prev", "h", "c", "context", "memory", "keys", "mask"], ["logits", "h_out", "c_out", "context_out"],
            {"prev": rows, "h": rows, "c": rows, "context": rows, "memory": seq, "keys": seq, "mask": seq,
             "logits": rows, "h_out": rows, "c_out": rows, "context_out": rows}, opset)
    return meta


# -- conversion, checks, metadata ---------------------------------------------------------------------------

def _graph_files(path: Path, meta: dict) -> list[Path]:
    return [path, decoder_path(path)] if meta["kind"] == "attention" else [path]


def _convert(path: Path, meta: dict, dtype: str) -> None:
    onnx = require("onnx")
    for f in _graph_files(path, meta):
        if dtype == "float16":
            try:
                from onnxconverter_common import float16
            except ImportError:
                raise MissingDependencyError("--fp16 needs the 'onnxconverter-common' package: pip install "
                                             "'dawnet[onnx]'") from None
            # LSTM cells stay float32: ONNX Runtime's CPU provider has no float16 LSTM kernel
            with warnings.catch_warnings():  # it warns for every weight below float16's smallest normal
                warnings.simplefilter("ignore")
                half = float16.convert_float_to_float16(onnx.load(str(f)), keep_io_types=True,
                                                        op_block_list=[*float16.DEFAULT_OP_BLOCK_LIST, "LSTM"])
            onnx.save(half, str(f))
        else:
            from onnxruntime.quantization import QuantType, quantize_dynamic

            q = f.with_name(f.stem + ".int8.onnx")
            # MatMul/Gemm/LSTM only: dynamic int8 convolutions (ConvInteger) ran 17x slower than float32 on crnn
            logging.disable(logging.WARNING)  # its advice to pre-process is for static quantization
            try:
                quantize_dynamic(str(f), str(q), weight_type=QuantType.QInt8,
                                 op_types_to_quantize=["MatMul", "Gemm", "LSTM"])
            finally:
                logging.disable(logging.NOTSET)
            os.replace(q, f)
    meta["dtype"] = dtype


def _attach(path: Path, meta: dict) -> None:
    """Write ``meta`` into the file(s); the decoder step records its own role and the encoder's name."""
    onnx = require("onnx")
    files = _graph_files(path, meta)
    if len(files) == 2:
        step = onnx.load(str(files[1]))
        _set_props(step, {"format": FORMAT, "version": VERSION, "kind": "attention_step", "encoder_file": path.name,
                          "dtype": meta["dtype"]})
        onnx.save(step, str(files[1]))
        meta["decoder_sha256"] = hashlib.sha256(files[1].read_bytes()).hexdigest()
    m = onnx.load(str(path))
    _set_props(m, meta)
    onnx.save(m, str(path))


def _set_props(model, meta: dict) -> None:
    del model.metadata_props[:]
    flat = {META_KEY: json.dumps(meta, ensure_ascii=False, sort_keys=True)}
    if meta.get("kind") in ("ctc", "attention"):  # a few plain keys for tools that list metadata
        flat.update({"charset": meta["charset"]["chars"], "height": str(meta["height"]), "decoder": meta["decoder"]})
    for k, v in flat.items():
        p = model.metadata_props.add()
        p.key, p.value = k, v
    model.producer_name, model.producer_version = "dawnet", dawnet.__version__
    model.doc_string = f"dawnet {meta.get('kind')} export; metadata key '{META_KEY}' (JSON) describes its use"


def _check(agent, path: Path, meta: dict, tolerance: float | None, dtype: str) -> dict:
    """Compare the file with PyTorch on a seeded probe batch; raise when ``tolerance`` is given and broken."""
    from dawnet.ocr.onnx.runtime import load

    _attach(path, meta)
    try:
        rt = load(path, threads=1)
    except OnnxFileError as e:
        if dtype == "float32":
            raise
        raise ValueError(f"the {dtype} conversion of this model does not run on ONNX Runtime's CPU provider "
                         f"({str(e).split('(', 1)[-1][:160]}...); export it without --fp16") from None
    if meta["kind"] == "detector":
        parity = _check_detector(agent, rt)
    else:
        parity = _check_lines(agent, rt)
    parity["dtype"] = dtype
    # lines: greedy transcriptions must match; pages: the raw outputs decide (boxes after NMS of near-equal
    # scores on a random probe page can legitimately swap, so they are reported, not required)
    differs = parity["greedy_equal"] < parity["lines"] and meta["kind"] != "detector"
    if tolerance is not None and (parity["max_abs"] > tolerance or differs):
        what = "the export" if dtype == "float32" else f"the {dtype} conversion"
        hint = ("" if dtype == "float32" else "; export without --fp16 (float32 holds parity)")
        raise ValueError(f"{what} does not hold parity with PyTorch: max abs difference {parity['max_abs']:.2e} "
                         f"(allowed {tolerance:.0e}), greedy outputs equal on {parity['greedy_equal']}/"
                         f"{parity['lines']} probe inputs{hint}")
    return parity


def _check_lines(agent, rt) -> dict:
    from dawnet.ocr import decode as D

    model = agent.model
    x, widths = _probe_lines(model, 3, seed=0)
    with torch.no_grad():
        ref, ref_len = model(x, widths)
    got, got_len = rt.model(x, widths)
    ctc = rt.kind == "ctc"
    if ctc:
        ref_ids = D.ctc_greedy(ref, ref_len)
        got_ids = D.ctc_greedy(got, got_len)
    else:
        ref_ids = D.attention_greedy(ref, ref_len, model.head.end_id)
        got_ids = D.attention_greedy(got, got_len, model.head.end_id)
    equal = sum(a == b for a, b in zip(ref_ids, got_ids))
    if got.shape == ref.shape and torch.equal(got_len, ref_len):
        finite = torch.isfinite(ref)
        diff = float((got - ref)[finite].abs().max()) if bool(finite.any()) else 0.0
        if not torch.equal(finite, torch.isfinite(got)):
            diff = float("inf")
    else:  # an attention line stopped at another step: not comparable step by step
        diff = float("inf")
    what = "log-probs" if ctc else "greedy decoder logits"
    return {"max_abs": diff, "compared": f"{what} of {len(ref_ids)} seeded padded lines, widths "
                                         f"{widths.tolist()}", "greedy_equal": int(equal), "lines": len(ref_ids)}


def _check_detector(agent, rt) -> dict:
    from dawnet.ocr.detection import decode_detections

    g = torch.Generator().manual_seed(0)
    s = int(agent.size)
    x = torch.rand(2, 1, s, s, generator=g)
    with torch.no_grad():
        ref = agent.model(x)
    got = rt.forward(x)
    diff = float((got - ref).abs().max())
    kw = {"stride": agent.stride, "score_threshold": agent.score_threshold, "iou_threshold": agent.iou_threshold,
          "max_det": agent.max_det, "vote_threshold": agent.vote_threshold}
    a, b = decode_detections(ref, **kw), decode_detections(got, **kw)
    same = [len(p["boxes"]) == len(q["boxes"]) for p, q in zip(a, b)]
    box = max([float((p["boxes"] - q["boxes"]).abs().max()) for p, q, ok in zip(a, b, same) if ok and len(p["boxes"])]
              or [0.0])
    return {"max_abs": diff, "compared": f"raw outputs of 2 seeded random {s}x{s} pages",
            "greedy_equal": int(sum(same)), "lines": 2, "box_max_px": box}


def _finish(raw: Path, out: Path, meta: dict) -> list[Path]:
    """Final metadata, then move the file(s) into place (the decoder first, so the encoder never points nowhere)."""
    _attach(raw, meta)
    files = _graph_files(raw, meta)
    targets = _graph_files(out, meta)
    for src, dst in reversed(list(zip(files, targets))):
        os.replace(src, dst)
    return targets

