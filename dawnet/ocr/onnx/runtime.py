"""Run exported recognizers and detectors with ONNX Runtime, decoding with dawnet's own decoders.

:class:`OnnxRecognizer` and :class:`OnnxDetector` show the surface of the PyTorch agents that inference code
uses (``infer``, ``read``, ``read_batch``, ``read_lines``, ``set_decoder``, ``model(x, widths)``, ``detect``), so
``dawnet.ocr.page.read_page``/``evaluate_pages`` and ``dawnet.ocr.reading.evaluate_lines`` take them as they
are. The recognizers are subclasses of the agents with the exported graph as their model, so decoding is
literally the agents' (greedy, CTC prefix beam + LM, attention beam + LM, confidences): what PyTorch gives for
the same model outputs.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from dawnet.ocr.onnx.meta import OnnxFileError, foreign_message, open_session

__all__ = ["OnnxRecognizer", "OnnxDetector", "OnnxLineModel", "OnnxStepDecoder", "load", "load_recognizer",
           "load_detector"]


def _run(session, names: set[str], feeds: dict) -> list[np.ndarray]:
    return session.run(None, {k: np.ascontiguousarray(v) for k, v in feeds.items() if k in names})


class OnnxStepDecoder:
    """The exported attention decoder step with :class:`~dawnet.ocr.models.blocks.AttentionDecoder`'s step API
    (``init_state``, ``step``, ``mask_specials``, ids), so ``dawnet.ocr.decode.attention_beam_search`` runs it.

    The "memory" it takes is the encoder output with the attention keys appended on the last axis (what
    :meth:`OnnxLineModel.forward_features` returns): the keys are computed once per line by the encoder graph.
    """

    def __init__(self, session, meta: dict):
        self.session, self.names = session, {i.name for i in session.get_inputs()}
        self.in_dim, self.hidden = int(meta["memory_dim"]), int(meta["hidden"])
        self.pad_id, self.end_id, self.start_id = int(meta["pad_id"]), int(meta["end_id"]), int(meta["start_id"])
        self.num_classes, self.attention = int(meta["num_classes"]), meta["attention"]

    def init_state(self, memory: torch.Tensor, lengths: torch.Tensor):
        n, t, _ = memory.shape
        mask = torch.arange(t)[None, :] < torch.as_tensor(lengths)[:, None]
        z = torch.zeros(n, self.hidden)
        return (z, z.clone(), torch.zeros(n, self.in_dim)), memory[..., self.in_dim:], mask

    def step_numpy(self, prev: np.ndarray, state: tuple, memory: np.ndarray, keys: np.ndarray, mask: np.ndarray):
        logits, h, c, ctx = _run(self.session, self.names, {"prev": prev, "h": state[0], "c": state[1],
                                                            "context": state[2], "memory": memory[..., :self.in_dim],
                                                            "keys": keys, "mask": mask})
        return logits, (h, c, ctx)

    def step(self, prev: torch.Tensor, state, memory: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor):
        """One step: previous ids (N,) -> logits (N, C) and the new ``(h, c, context)`` state (torch tensors)."""
        logits, state = self.step_numpy(prev.numpy(), tuple(s.numpy() for s in state), memory.numpy(), keys.numpy(),
                                        mask.numpy())
        return torch.from_numpy(logits), tuple(torch.from_numpy(s) for s in state)

    def __call__(self, memory: torch.Tensor, lengths: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Teacher forcing: decoder inputs (N, S) ``[start, c1, ...]`` -> logits (N, S, C), as the PyTorch head."""
        state, keys, mask = self.init_state(memory, lengths)
        mem, keys, mask = memory.numpy(), keys.numpy(), mask.numpy()
        state = tuple(s.numpy() for s in state)
        steps = []
        for i in range(targets.shape[1]):
            logits, state = self.step_numpy(targets[:, i].numpy(), state, mem, keys, mask)
            steps.append(logits)
        return torch.from_numpy(np.stack(steps, 1))

    def mask_specials(self, logits: torch.Tensor) -> torch.Tensor:
        logits = logits.clone()
        logits[..., self.pad_id] = float("-inf")
        logits[..., self.start_id] = float("-inf")
        return logits


class OnnxLineModel:
    """An exported recognizer behind the face of a :class:`~dawnet.ocr.models.recognizer.Recognizer` in eval mode:
    ``model(x, widths)`` returns ``(log_probs, lengths)`` (CTC) or greedy ``(logits, lengths)`` (attention), as
    torch tensors; ``eval()``/``train()`` are accepted and change nothing (a graph has no training mode)."""

    training = False

    def __init__(self, session, meta: dict, step: OnnxStepDecoder | None = None):
        self.session, self.names, self.meta = session, {i.name for i in session.get_inputs()}, meta
        self.height, self.in_chans, self.min_width = int(meta["height"]), int(meta["in_chans"]), int(meta["min_width"])
        self.num_classes, self.max_length = int(meta["num_classes"]), meta.get("max_length")
        self.head_kind = "ctc" if meta["kind"] == "ctc" else "attn"
        self.head = step

    def eval(self) -> OnnxLineModel:
        return self

    def train(self, mode: bool = True) -> OnnxLineModel:
        return self

    def _inputs(self, x, widths) -> tuple[np.ndarray, np.ndarray]:
        x = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected lines of shape (N, {self.in_chans}, {self.height}, W), got {tuple(x.shape)}: "
                             "convert images to grayscale and add batch/channel axes")
        if x.shape[2] != self.height:
            raise ValueError(f"this model reads lines {self.height} px high, got {x.shape[2]} px: resize the line to "
                             f"height {self.height} keeping its aspect ratio (prepare() does this)")
        if x.shape[3] < self.min_width:
            raise ValueError(f"lines must be at least {self.min_width} px wide, got {x.shape[3]}")
        w = np.full(x.shape[0], x.shape[3], dtype=np.int64) if widths is None else np.asarray(
            torch.as_tensor(widths).cpu(), dtype=np.int64)
        if w.shape != (x.shape[0],) or (w < 1).any() or (w > x.shape[3]).any():
            raise ValueError(f"widths must be (N,) = ({x.shape[0]},) values in 1..{x.shape[3]}, got {w.tolist()}")
        return x, w

    def forward_features(self, x, widths=None) -> tuple[torch.Tensor, torch.Tensor]:
        """Attention: the encoder's memory with the attention keys appended (N, T, D + A), and valid steps (N,)."""
        memory, lengths, keys = _run(self.session, self.names, dict(zip(("images", "widths"), self._inputs(x, widths))))
        return torch.from_numpy(np.concatenate([memory, keys], -1)), torch.from_numpy(lengths)

    def forward_head(self, features: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Greedy attention decoding, step by step as ``AttentionDecoder.forward`` and ``Recognizer.forward_head``."""
        from dawnet.ocr.models.blocks import default_max_length

        head = self.head
        feats = features.numpy()
        n, t, _ = feats.shape
        lens = lengths.numpy()
        mask = np.arange(t)[None, :] < lens[:, None]
        state = (np.zeros((n, head.hidden), np.float32),) * 2 + (np.zeros((n, head.in_dim), np.float32),)
        limits = default_max_length(lengths)
        if self.max_length is not None:
            limits = limits.clamp(max=int(self.max_length))
        limits = limits.numpy()
        keys = feats[..., head.in_dim:]
        prev = np.full(n, head.start_id, dtype=np.int64)
        done = np.zeros(n, dtype=bool)
        steps = []
        for i in range(int(limits.max())):
            logits, state = head.step_numpy(prev, state, feats, keys, mask)
            logits[:, head.pad_id] = -np.inf
            logits[:, head.start_id] = -np.inf
            steps.append(logits)
            prev = logits.argmax(-1)
            done |= (prev == head.end_id) | (limits <= i + 1)
            if done.all():
                break
        out = torch.from_numpy(np.stack(steps, 1))
        ended = out.argmax(-1) == head.end_id
        first = torch.where(ended.any(1), ended.float().argmax(1) + 1, out.shape[1])
        return out, torch.minimum(first, torch.from_numpy(limits))

    def __call__(self, x, widths=None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.head_kind == "ctc":
            feeds = dict(zip(("images", "widths"), self._inputs(x, widths)))
            log_probs, lengths = _run(self.session, self.names, feeds)
            return torch.from_numpy(log_probs), torch.from_numpy(lengths)
        return self.forward_head(*self.forward_features(x, widths))


def _session(path, threads, expect: tuple[str, ...]):
    session, meta = open_session(path, threads)
    if not meta:
        raise OnnxFileError(foreign_message(path))
    kind = meta.get("kind")
    if kind == "attention_step":
        raise OnnxFileError(f"{path} is the decoder step of an attention export: load its encoder file "
                            f"{meta.get('encoder_file')!r} (it names this file)")
    if kind not in expect:
        what = "a text-line detector" if kind == "detector" else "a line recognizer"
        want = "a line recognizer (crnn, attn, ...)" if "ctc" in expect else "the text-line detector (yolo)"
        raise OnnxFileError(f"{path} holds {what}, not {want}: pass the file exported from the right checkpoint")
    return session, meta


class OnnxRecognizer:
    """A line recognizer from a ``dawnet export`` file, with the PyTorch agent's reading methods.

    ``OnnxRecognizer(path)`` gives an instance of a subclass of :class:`~dawnet.ocr.agents.CTCAgent` or
    :class:`~dawnet.ocr.agents.AttentionAgent` (chosen by the file's metadata) whose model is the exported
    graph (:class:`OnnxLineModel`): ``infer``, ``read``, ``read_batch``, ``read_lines``, ``decode`` and
    ``set_decoder`` are the agent's own, so decoding (greedy, CTC prefix beam + LM, attention beam + LM) and
    confidences are computed exactly as for the checkpoint. Nothing about training is set up.

    Args:
        path: the exported ``.onnx`` file (for attention, ``X.decoder.onnx`` must sit beside it).
        threads: ONNX Runtime intra-op threads (None: its default).
    """

    def __new__(cls, path: str | os.PathLike, threads: int | None = None):
        if cls is OnnxRecognizer:
            session, meta = _session(path, threads, ("ctc", "attention"))
            cls = _OnnxCTC if meta["kind"] == "ctc" else _OnnxAttention
            obj = object.__new__(cls)
            obj._opened = (session, meta)
            return obj
        return object.__new__(cls)

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        from dawnet.ocr.agents import DecoderConfig
        from dawnet.ocr.charset import Charset

        self.path = Path(path)
        session, meta = self.__dict__.pop("_opened", None) or _session(path, threads, ("ctc", "attention"))
        step = None
        if meta["kind"] == "attention":
            dec = self.path.with_name(meta["decoder_file"])
            if not dec.is_file():
                raise FileNotFoundError(f"{path} is an attention encoder; its decoder step {dec} is missing: keep the "
                                        "two files 'dawnet export' wrote together")
            if hashlib.sha256(dec.read_bytes()).hexdigest() != meta.get("decoder_sha256"):
                raise OnnxFileError(f"{dec} is not the decoder step exported with {path} (sha256 differs): export "
                                    "them again together")
            step = OnnxStepDecoder(open_session(dec, threads)[0], meta)
        self.metadata, self.kind, self.dtype = meta, meta["kind"], meta.get("dtype", "float32")
        self.charset = Charset.from_dict(meta["charset"])
        self.decoder = DecoderConfig(**meta.get("decoding", {}))
        self.lm = None
        self.notes: list[str] = []
        self.model = OnnxLineModel(session, meta, step)
        self.device = torch.device("cpu")

    @torch.no_grad()
    def infer(self, raw) -> str:
        """The text of one raw line image (path, PIL, numpy, tensor), prepared as the training data was."""
        x, widths = self.prepare(raw)
        return self.postprocess(self.model(x, widths), (x, widths))

    def __repr__(self) -> str:
        return f"OnnxRecognizer({str(self.path)!r}, {self.metadata.get('model')}, {self.kind}, {self.dtype})"


def _recognizer_classes():
    from dawnet.ocr.agents import AttentionAgent, CTCAgent

    class OnnxCTCRecognizer(OnnxRecognizer, CTCAgent):
        """An exported CTC recognizer (see :class:`OnnxRecognizer`)."""

    class OnnxAttentionRecognizer(OnnxRecognizer, AttentionAgent):
        """An exported attention recognizer (see :class:`OnnxRecognizer`)."""

    return OnnxCTCRecognizer, OnnxAttentionRecognizer


_OnnxCTC, _OnnxAttention = _recognizer_classes()


class OnnxDetector:
    """The text-line detector from a ``dawnet export`` file: ``infer(page) -> {"boxes", "scores"}`` in page pixels,
    reading order, exactly as :meth:`dawnet.ocr.detection.DetectionAgent.infer` (letterbox, NMS, box voting)."""

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        self.path = Path(path)
        self.session, meta = _session(path, threads, ("detector",))
        self.metadata, self.dtype = meta, meta.get("dtype", "float32")
        self.size, self.stride, self.max_det = int(meta["size"]), int(meta["stride"]), int(meta["max_det"])
        self.score_threshold, self.iou_threshold = float(meta["score_threshold"]), float(meta["iou_threshold"])
        self.vote_threshold = meta.get("vote_threshold")

    def forward(self, images) -> torch.Tensor:
        """Raw outputs (N, 5, S/stride, S/stride) of letterboxed canvases (N, 1, S, S)."""
        x = (images.detach().float().cpu().numpy() if isinstance(images, torch.Tensor)
             else np.asarray(images, np.float32))
        if x.ndim != 4 or x.shape[1:] != (1, self.size, self.size):
            raise ValueError(f"expected letterboxed pages (N, 1, {self.size}, {self.size}), got {tuple(x.shape)}: use "
                             "infer(page) or dawnet.ocr.detection.letterbox(page, size)")
        return torch.from_numpy(self.session.run(None, {"images": np.ascontiguousarray(x)})[0])

    def detect_batch(self, pages) -> list[dict]:
        """Lines of several raw pages, letterboxed and run as one batch."""
        from dawnet.ocr.detection import decode_detections, letterbox, order_lines, unletterbox_boxes

        canvases, boxes = zip(*(letterbox(p, self.size) for p in pages))
        dets = decode_detections(self.forward(torch.stack(canvases)), self.stride, self.score_threshold,
                                 self.iou_threshold, self.max_det, vote_threshold=self.vote_threshold)
        out = []
        for det, lb in zip(dets, boxes):
            b = unletterbox_boxes(det["boxes"], lb)
            keep = ((b[:, 2] - b[:, 0]) >= 1) & ((b[:, 3] - b[:, 1]) >= 1)
            b, s = b[keep], det["scores"][keep]
            order = order_lines(b)
            out.append({"boxes": b[order], "scores": s[order]})
        return out

    def infer(self, page) -> dict:
        """Lines of one raw page: ``{"boxes": (K, 4) page pixels in reading order, "scores": (K,)}``."""
        return self.detect_batch([page])[0]

    detect = infer

    def __repr__(self) -> str:
        return f"OnnxDetector({str(self.path)!r}, size {self.size}, {self.dtype})"


def load(path: str | os.PathLike, threads: int | None = None) -> OnnxRecognizer | OnnxDetector:
    """The recognizer or detector an exported file holds (read from its metadata)."""
    _, meta = open_session(path, threads=1)
    if meta.get("kind") == "detector":
        return OnnxDetector(path, threads)
    return OnnxRecognizer(path, threads)


def load_recognizer(path: str | os.PathLike, threads: int | None = None) -> OnnxRecognizer:
    """An :class:`OnnxRecognizer`; a clear error when the file holds a detector or is not dawnet's."""
    return OnnxRecognizer(path, threads)



def load_detector(path: str | os.PathLike, threads: int | None = None) -> OnnxDetector:
    """An :class:`OnnxDetector`; a clear error when the file holds a recognizer or is not dawnet's."""
    return OnnxDetector(path, threads)
