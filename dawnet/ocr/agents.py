"""Agents that train and run line recognizers: CTC (CRNN) and attention (teacher forcing, end token).

They are :class:`dawnet.Agent` subclasses that only override the task hooks, so checkpoints, schedules,
the LR finder, history, callbacks and DDP work for them unchanged; the model stays a plain module.

Batches are ``(images (N, 1, H, W), widths (N,), texts)`` tuples or dicts with keys ``images``,
``widths``, ``texts`` (what :mod:`dawnet.ocr.data` yields). Validation reports CER and WER of the
decoded text (greedy unless a decoder with beam/LM is set). Inference starts from a path, a PIL image,
a numpy array or a tensor of one text line::

    agent = CTCAgent(create_model("crnn", num_classes=cs.num_ctc_classes), opt, charset=cs)
    agent.fit(train_loader, epochs=10, val=val_loader)
    agent.infer("line.png")                       # -> "the text"
    agent.read(["a.png", "b.png"])                # -> [Reading(text, confidences, frames, notes), ...]
    agent.read_batch(batch["images"], batch["widths"])   # a padded batch -> readings
    agent.set_decoder(beam=10, lm=CharNgramLM.load("lm.json.gz"), lm_weight=0.5, bonus=1.0)

Every way of reading (``infer``, ``read``, ``read_lines``, ``read_batch``, ``read_outputs``, validation)
goes through the agent's one decoder setting, so they give the same text for the same line.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from dawnet.agent import Agent
from dawnet.images import load_image, to_gray
from dawnet.ocr import decode as D
from dawnet.ocr import metrics as M
from dawnet.ocr.charset import Charset
from dawnet.ocr.data.datasets import to_tensor
from dawnet.ocr.decode import Reading
from dawnet.ocr.lm import CharNgramLM

__all__ = ["CTCAgent", "AttentionAgent", "DecoderConfig", "LineTargets", "LineImageError", "Reading",
           "recognizer_agent", "prepare_line", "pad_lines"]

MAX_LINE_ASPECT = 200  # width / height beyond this is a page or a banner, not a line
MIN_SOURCE_HEIGHT = 8  # px; a line image shorter than this has no readable text
PAGE_MIN_HEIGHT = 256  # px; taller images that are not clearly wider than high are pages, not lines


class LineImageError(ValueError):
    """A raw image that cannot be read as one text line (blank, empty, too small, too large)."""


class LineTargets(NamedTuple):
    """What metrics and losses compare against: the texts, plus encoded ids for attention models."""

    texts: list[str]
    ids: torch.Tensor | None = None  # attention: (N, S) [c1..cn, end, pad...]


@dataclass
class DecoderConfig:
    """How outputs become text. beam 1 without an LM is greedy decoding.

    Args:
        beam (1): beam width. lm_weight (0.0): LM shallow-fusion weight.
        bonus (0.0): score added per character (offsets the LM's short-output bias).
        prune (1e-4): CTC beam search extends only characters at least this probable per step.
    """

    beam: int = 1
    lm_weight: float = 0.0
    bonus: float = 0.0
    prune: float = 1e-4

    def __post_init__(self):
        if not isinstance(self.beam, int) or self.beam < 1:
            raise ValueError(f"beam must be an integer >= 1, got {self.beam!r}")


def _texts(targets) -> list[str]:
    return list(targets.texts if isinstance(targets, LineTargets) else targets)


DEFAULT_METRICS = {"cer": M.batch_cer, "wer": M.batch_wer}
# names under which checkpoints written before the metrics moved to dawnet.ocr.metrics stored them
_STORED_METRIC_NAMES = {"cer": M.batch_cer, "wer": M.batch_wer, "line_accuracy": M.batch_line_accuracy}


def __getattr__(name: str):
    # ``dawnet.ocr.agents:cer`` in an older checkpoint's metrics resolves to the one implementation
    if name in _STORED_METRIC_NAMES:
        return _STORED_METRIC_NAMES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


# -- raw line images -> model input ---------------------------------------------------------------------

def prepare_line(raw, height: int, min_width: int = 4, max_width: int = 16384) -> tuple[torch.Tensor, list[str]]:
    """One line image (path, PIL, numpy, tensor) -> ``(1, 1, height, W)`` float tensor, ink = 1, paper = 0,
    exactly as the training data is made (:func:`dawnet.ocr.data.datasets.to_tensor`).

    Returns the tensor and notes for the user (e.g. a colour image converted to grayscale). Raises
    :class:`LineImageError` for images that cannot be a text line.
    """
    notes: list[str] = []
    if isinstance(raw, (str, os.PathLike, Image.Image)):
        im = load_image(raw, mode="auto")  # 16-bit grey scaled by its range, alpha composited over white
        if im.mode != "L":
            notes.append(f"colour image ({im.mode}) converted to grayscale")
        a = np.asarray(to_gray(im), dtype=np.float32) / 255.0
    elif isinstance(raw, np.ndarray):
        colour = raw.ndim == 3 and raw.shape[2] in (3, 4)
        if colour:
            notes.append(f"colour array ({raw.shape[2]} channels) converted to grayscale")
        if np.issubdtype(raw.dtype, np.integer) and raw.size and (raw.ndim == 2 or (raw.ndim == 3 and (
                colour or raw.shape[2] == 1))):
            a = np.asarray(to_gray(raw), dtype=np.float32) / 255.0  # 8/16-bit levels, RGBA over white
        else:  # float arrays: values in [0, 1]
            a = raw.astype(np.float32)
            if colour:
                a = a[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
            elif a.ndim == 3 and a.shape[2] == 1:
                a = a[..., 0]
    elif isinstance(raw, torch.Tensor):
        a = raw.detach().float().cpu().numpy()
        while a.ndim > 2 and a.shape[0] == 1:
            a = a[0]
        if a.ndim == 3 and a.shape[0] in (3, 4):
            notes.append(f"colour tensor ({a.shape[0]} channels) converted to grayscale")
            a = np.tensordot(np.array([0.299, 0.587, 0.114], dtype=np.float32), a[:3], axes=1)
        if raw.dtype == torch.uint8:
            a = a / 255.0
        else:
            notes.append("tensor input is taken as dark ink on light paper in [0, 1]")
    else:
        raise TypeError(f"cannot read a line from {type(raw).__name__}: give a path, a PIL image, a numpy array "
                        "or a tensor")
    if a.ndim != 2:
        raise LineImageError(f"a line image must be 2-d (H, W) grayscale or (H, W, 3) colour, got shape {a.shape}")
    h, w = a.shape
    if h == 0 or w == 0:
        raise LineImageError(f"the image is empty ({h}x{w} px)")
    if h < MIN_SOURCE_HEIGHT:
        raise LineImageError(f"the image is only {h} px high: too small to hold readable text (need >= "
                             f"{MIN_SOURCE_HEIGHT} px); scan or crop at a higher resolution")
    if w / h > MAX_LINE_ASPECT:
        raise LineImageError(f"the image is {w}x{h} px (aspect {w / h:.0f}:1): too wide for one text line")
    if float(a.max() - a.min()) < 1e-3:
        raise LineImageError("the image is blank (every pixel has the same value): there is no text to read")
    new_w = max(1, round(w * height / h))
    if new_w > max_width:
        raise LineImageError(f"the line would be {new_w} px wide at height {height}: too long for one line "
                             f"(max {max_width}); is this a page? Detect and crop lines first")
    if h > PAGE_MIN_HEIGHT and w < 1.5 * h:
        raise LineImageError(f"the image is {w}x{h} px, tall and not much wider than high: this looks like a page "
                             "or a column, not one text line; detect and crop the lines first")
    # the training data's own conversion (dawnet.ocr.data.to_tensor): same resize, ink = 1, paper = 0
    im = Image.fromarray(np.clip(np.rint(a * 255.0), 0, 255).astype(np.uint8), mode="L")
    x = to_tensor(im, height)[None]
    if x.shape[-1] < min_width:
        x = F.pad(x, (0, min_width - x.shape[-1]))  # zero = blank paper
    return x, notes


def pad_lines(lines: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Line tensors ``(1, 1, H, w_i)`` (what :func:`prepare_line` gives) -> a zero-padded batch
    ``(N, 1, H, max w)`` and the widths ``(N,)``: zero is blank paper, as in the training batches."""
    if not lines:
        raise ValueError("no lines to batch")
    heights = {int(t.shape[-2]) for t in lines}
    if len(heights) != 1:
        raise ValueError(f"lines of different heights {sorted(heights)} cannot share a batch; prepare them at the "
                         "model's height (prepare_line(image, agent.height))")
    widths = torch.tensor([int(t.shape[-1]) for t in lines])
    x = torch.zeros(len(lines), 1, heights.pop(), int(widths.max()), dtype=lines[0].dtype)
    for j, t in enumerate(lines):
        x[j, :, :, :t.shape[-1]] = t.reshape(1, t.shape[-2], t.shape[-1])
    return x, widths


def _raw_images(images) -> list:
    """``read``'s argument as a list: one image (path, PIL, numpy, tensor) or a sequence of them."""
    if isinstance(images, (str, os.PathLike, Image.Image, np.ndarray, torch.Tensor)):
        return [images]
    if isinstance(images, Sequence):
        return list(images)
    raise TypeError(f"read() takes a line image (path, PIL image, numpy array, tensor) or a list of them, got "
                    f"{type(images).__name__}")


# -- agents -----------------------------------------------------------------------------------------------

class _RecognizerAgent(Agent):
    """Shared parts of the CTC and attention agents: charset, decoder settings, batches, reading raw lines."""

    def __init__(self, model, optimizer, loss=None, schedule=None, metrics=None, device="auto", callbacks=(), *,
                 charset: Charset | Mapping | str, decoder: DecoderConfig | Mapping | None = None, **kwargs):
        if metrics is None:
            metrics = dict(DEFAULT_METRICS)
        super().__init__(model, optimizer, loss=loss, schedule=schedule, metrics=metrics, device=device,
                         callbacks=callbacks, **kwargs)
        if isinstance(charset, str):
            charset = Charset(charset)
        elif isinstance(charset, Mapping):
            charset = Charset.from_dict(dict(charset))
        if not isinstance(charset, Charset):
            raise TypeError(f"charset must be a Charset, its to_dict() or a string, got {type(charset).__name__}")
        self.charset = charset
        self.decoder = decoder if isinstance(decoder, DecoderConfig) else DecoderConfig(**dict(decoder or {}))
        self.lm: CharNgramLM | None = None  # set with set_decoder(lm=...); not stored in checkpoints
        self.notes: list[str] = []  # what prepare() did to the last raw input (e.g. colour -> gray)
        self._check_classes()

    expected_classes: str = ""

    def _check_classes(self) -> None:
        want = getattr(self.charset, self.expected_classes)
        have = getattr(self.model, "num_classes", want)
        if have != want:
            raise ValueError(f"the model has {have} output classes but the charset ({len(self.charset)} characters) "
                             f"needs {want} ({self.expected_classes}); build the model with num_classes={want}")

    def set_decoder(self, beam: int | None = None, lm: CharNgramLM | None = None, lm_weight: float | None = None,
                    bonus: float | None = None, prune: float | None = None) -> None:
        """Change how outputs are decoded (validation, ``infer``, ``read``); None leaves a setting as it is."""
        cfg = asdict(self.decoder)
        cfg.update({k: v for k, v in {"beam": beam, "lm_weight": lm_weight, "bonus": bonus, "prune": prune}.items()
                    if v is not None})
        self.decoder = DecoderConfig(**cfg)
        if lm is not None:
            missing = [c for c in self.charset.chars if c not in lm.index]
            if len(missing) > len(self.charset) // 2:
                raise ValueError(f"the LM knows only {len(self.charset) - len(missing)} of the charset's "
                                 f"{len(self.charset)} characters: was it trained for another alphabet?")
            self.lm = lm

    @property
    def greedy(self) -> bool:
        """Whether the decoder is plain greedy decoding (beam 1, no LM weight, no bonus)."""
        d = self.decoder
        return d.beam == 1 and (self.lm is None or d.lm_weight == 0) and d.bonus == 0

    @property
    def height(self) -> int:
        return int(self.model.height)

    def config(self) -> dict:
        return {**super().config(), "charset": self.charset.to_dict(), "decoder": asdict(self.decoder)}

    def _split(self, batch):
        if isinstance(batch, Mapping):
            try:
                return batch["images"], batch.get("widths"), list(batch["texts"])
            except KeyError as e:
                raise TypeError(f"a line batch dict needs keys 'images', 'widths' and 'texts'; missing {e}") from None
        if isinstance(batch, (tuple, list)) and len(batch) == 3:
            return batch[0], batch[1], list(batch[2])
        if isinstance(batch, (tuple, list)) and len(batch) == 2:
            return batch[0], None, list(batch[1])
        raise TypeError("a line batch is (images, widths, texts), (images, texts) or a dict with those keys; "
                        f"got {type(batch).__name__}")

    # -- the task hooks: inputs are (images, widths) or, attention training, (images, widths, decoder inputs)

    def prepare(self, raw) -> tuple:
        x, self.notes = prepare_line(raw, self.height, self.model.min_width)
        return x, torch.tensor([x.shape[-1]])

    def predict(self, outputs, inputs) -> list[str]:
        return self.decode(outputs, *inputs[:2], teacher_forced=len(inputs) > 2)

    def postprocess(self, outputs, inputs) -> str:
        return self.decode(outputs, *inputs[:2])[0]

    # -- reading: one decoder setting for every path ---------------------------------------------------

    def decode(self, outputs, x: torch.Tensor | None = None, widths: torch.Tensor | None = None, *,
               teacher_forced: bool = False) -> list[str]:
        """Texts of the model's outputs for the batch ``x`` (``widths``), with the agent's decoder.

        Only the text: :meth:`read_outputs` adds confidences and frames. ``teacher_forced``: the outputs
        came from a teacher-forced pass (attention training), so the lines are decoded afresh from ``x``.
        """
        raise NotImplementedError

    def read_outputs(self, outputs, x: torch.Tensor | None = None, widths: torch.Tensor | None = None
                     ) -> list[Reading]:
        """Readings (text, confidences, frames) of the outputs of a free-running ``model(x, widths)``."""
        raise NotImplementedError

    @torch.inference_mode()
    def read_batch(self, x: torch.Tensor, widths: torch.Tensor | None = None) -> list[Reading]:
        """Readings of a padded batch ``x`` (N, 1, H, W) of prepared lines (ink 1, paper 0: what
        ``collate_lines`` gives) with valid ``widths`` (N,); eval mode inside, the model's mode restored. The
        plain model runs in float32 (no autocast, no parallel wrapper), as ``dawnet eval`` and the bench score."""
        x = x.to(self.device)
        widths = None if widths is None else torch.as_tensor(widths).to(self.device)
        was = self.model.training
        self.model.eval()
        try:
            return self.read_outputs(self.model(x, widths), x, widths)
        finally:
            self.model.train(was)

    def read_lines(self, lines: Sequence[torch.Tensor], batch_size: int = 16) -> list[Reading]:
        """Readings of prepared lines (each ``(1, 1, H, w)``, from :func:`prepare_line`), in their order,
        read in width-sorted padded batches of ``batch_size``."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        order = sorted(range(len(lines)), key=lambda i: lines[i].shape[-1])
        out: list[Reading | None] = [None] * len(lines)
        for s in range(0, len(order), batch_size):
            chunk = order[s:s + batch_size]
            for i, reading in zip(chunk, self.read_batch(*pad_lines([lines[i] for i in chunk]))):
                out[i] = reading
        return out

    def read(self, images, batch_size: int = 16) -> list[Reading]:
        """Readings of raw line images (paths, PIL images, numpy arrays, tensors; one or a list), in their
        order; each reading's ``notes`` say what preparing its image did. An image that cannot be a text
        line raises :class:`LineImageError` naming it."""
        prepared = []
        for i, raw in enumerate(_raw_images(images)):
            try:
                prepared.append(prepare_line(raw, self.height, self.model.min_width))
            except LineImageError as e:
                name = str(raw) if isinstance(raw, (str, os.PathLike)) else f"image {i}"
                raise LineImageError(f"{name}: {e}") from None
        readings = self.read_lines([x for x, _ in prepared], batch_size)
        return [replace(r, notes=tuple(notes)) for r, (_, notes) in zip(readings, prepared)]


class CTCAgent(_RecognizerAgent):
    """Trains a CTC recognizer (``head="ctc"``): CTC loss summed per line, averaged over the batch.

    Args (beyond :class:`dawnet.Agent`'s):
        charset: the alphabet (a :class:`Charset`, its ``to_dict()`` or a string of characters).
        decoder: a :class:`DecoderConfig` or its dict (greedy by default).
    """

    kind = "ctc"
    expected_classes = "num_ctc_classes"

    def unpack(self, batch):
        images, widths, texts = self._split(batch)
        return (images, widths), LineTargets(texts)

    def compute_loss(self, outputs, targets) -> torch.Tensor:
        log_probs, lengths = outputs
        flat, target_lengths = self.charset.encode_batch(_texts(targets))
        loss = F.ctc_loss(log_probs.transpose(0, 1).float(), flat.to(log_probs.device), lengths,
                          target_lengths.to(log_probs.device), blank=self.charset.blank, reduction="sum",
                          zero_infinity=True)  # lines too long for their width add 0 instead of inf
        return loss / log_probs.shape[0]

    def _search(self, log_probs, lengths) -> list[list[int]]:
        d = self.decoder
        return D.ctc_beam_search(log_probs, lengths, d.beam, self.lm, self.charset, d.lm_weight, d.bonus,
                                 self.charset.blank, d.prune)

    def decode(self, outputs, x=None, widths=None, *, teacher_forced=False) -> list[str]:
        log_probs, lengths = outputs
        if self.greedy:
            ids = D.ctc_greedy(log_probs, lengths, blank=self.charset.blank)
        else:
            ids = self._search(log_probs, lengths)
        return [self.charset.decode(i) for i in ids]

    def read_outputs(self, outputs, x=None, widths=None) -> list[Reading]:
        log_probs, lengths = outputs
        if self.greedy:
            return D.ctc_greedy_readings(log_probs, lengths, self.charset, self.charset.blank)
        return D.ctc_readings(log_probs, lengths, self._search(log_probs, lengths), self.charset, self.charset.blank)


class AttentionAgent(_RecognizerAgent):
    """Trains an attention recognizer (``head="attn"``): teacher forcing, cross-entropy to the end token.

    Validation decodes freely (greedy, or beam + LM per the decoder settings) from the encoder output,
    so its CER is what inference gets, not the optimistic teacher-forced one.

    Args (beyond :class:`dawnet.Agent`'s):
        charset, decoder: as for :class:`CTCAgent`.
        label_smoothing (0.0): cross-entropy label smoothing.
        ctc_weight (0.3): weight of the encoder's CTC loss when the model has one (``aux_ctc=True``):
            ``loss = (1 - w) * cross-entropy + w * CTC``, both per character (Kim et al. 2017).
    """

    kind = "attention"
    expected_classes = "num_attn_classes"

    def __init__(self, *args, label_smoothing: float = 0.0, ctc_weight: float = 0.3, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0.0 <= ctc_weight < 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1), got {ctc_weight}")
        self.label_smoothing, self.ctc_weight = label_smoothing, float(ctc_weight)

    def config(self) -> dict:
        return {**super().config(), "label_smoothing": self.label_smoothing, "ctc_weight": self.ctc_weight}

    def _teacher_inputs(self, seqs: Sequence[Sequence[int]], length: int | None = None) -> torch.Tensor:
        """Decoder inputs ``[start, c1, ..., cn, pad...]`` (N, length) for id sequences."""
        cs = self.charset
        s = length if length is not None else max(len(q) for q in seqs) + 1
        dec_in = torch.zeros(len(seqs), s, dtype=torch.long)
        for i, q in enumerate(seqs):
            row = [cs.start, *q][:s]
            dec_in[i, :len(row)] = torch.tensor(row)
        return dec_in

    def unpack(self, batch):
        images, widths, texts = self._split(batch)
        cs = self.charset
        seqs = [cs.encode(t) for t in texts]
        dec_in = self._teacher_inputs(seqs)
        dec_out = torch.zeros_like(dec_in)  # pad 0 is ignored by the loss
        for i, q in enumerate(seqs):
            dec_out[i, :len(q) + 1] = torch.tensor([*q, cs.end])
        return (images, widths, dec_in.to(images.device)), LineTargets(texts, dec_out.to(images.device))

    def compute_loss(self, outputs, targets) -> torch.Tensor:
        logits, ids = outputs[0], targets.ids
        if logits.shape[1] != ids.shape[1]:
            raise ValueError(f"decoder produced {logits.shape[1]} steps for {ids.shape[1]} targets: the model must "
                             "be called with the teacher-forcing inputs unpack() builds")
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), ids.reshape(-1),
                               ignore_index=self.charset.pad, label_smoothing=self.label_smoothing)
        if len(outputs) > 2 and self.ctc_weight > 0:  # joint CTC-attention: the encoder's CTC head
            log_probs, lengths = outputs[2]
            flat, target_lengths = self.charset.encode_batch(_texts(targets))
            ctc = F.ctc_loss(log_probs.transpose(0, 1).float(), flat.to(log_probs.device), lengths,
                             target_lengths.to(log_probs.device), blank=self.charset.blank, reduction="mean",
                             zero_infinity=True)  # mean: per character, the scale of the cross-entropy
            loss = (1 - self.ctc_weight) * loss + self.ctc_weight * ctc
        return loss

    @torch.no_grad()
    def _ids(self, outputs, x, widths, teacher_forced: bool):
        """Decoded ids per line, and either the (N, S, C) logits whose step ``s`` chose id ``s`` (greedy) or
        the encoder output ``(features, lengths)`` the beam search ran on (beam)."""
        logits, lengths = outputs[:2]  # a third output (the encoder's CTC) is for the loss only
        if self.greedy and not teacher_forced:
            return D.attention_greedy(logits, lengths, self.charset.end), logits, None
        if x is None:
            raise ValueError("attention beam decoding and teacher-forced outputs need the model inputs: pass x and "
                             "widths (or use agent.read / agent.read_batch)")
        x = x.to(self.device)
        widths = None if widths is None else torch.as_tensor(widths).to(self.device)
        was = self.model.training
        self.model.eval()
        try:
            features, flens = self.model.forward_features(x, widths)
            if self.greedy:
                logits, lens = self.model.forward_head(features, flens)
                return D.attention_greedy(logits, lens, self.charset.end), logits, None
            d = self.decoder
            ids = D.attention_beam_search(self.model.head, features, flens, d.beam, self.lm, self.charset,
                                          d.lm_weight, d.bonus, self.model.max_length)
            return ids, None, (features, flens)
        finally:
            self.model.train(was)

    def decode(self, outputs, x=None, widths=None, *, teacher_forced=False) -> list[str]:
        """Text of each line. Teacher-forced outputs are never scored: with the inputs at hand, the lines
        are decoded freely from the encoder (greedy, or beam + LM per the decoder settings)."""
        ids, _, _ = self._ids(outputs, x, widths, teacher_forced)
        return [self.charset.decode(i) for i in ids]

    @torch.no_grad()
    def read_outputs(self, outputs, x=None, widths=None) -> list[Reading]:
        ids, logits, encoded = self._ids(outputs, x, widths, teacher_forced=False)
        if logits is None:  # beam: the model's own step probabilities of the ids found, teacher-forced
            features, flens = encoded
            was = self.model.training
            self.model.eval()
            try:
                dec_in = self._teacher_inputs(ids, max(1, max(len(i) for i in ids))).to(features.device)
                logits = self.model.head.mask_specials(self.model.head(features, flens, dec_in))
            finally:
                self.model.train(was)
        return D.attention_readings(logits, ids, self.charset)


def recognizer_agent(model, optimizer, charset: Charset, **kwargs) -> _RecognizerAgent:
    """The agent class that fits ``model``'s head (CTC or attention)."""
    kind = getattr(model, "head_kind", None)
    if kind == "ctc":
        return CTCAgent(model, optimizer, charset=charset, **kwargs)
    if kind == "attn":
        return AttentionAgent(model, optimizer, charset=charset, **kwargs)
    raise ValueError(f"{type(model).__name__} is not a line recognizer (no CTC or attention head)")
