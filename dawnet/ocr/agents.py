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
    agent.set_decoder(beam=10, lm=CharNgramLM.load("lm.json.gz"), lm_weight=0.5, bonus=1.0)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from rapidfuzz.distance import Levenshtein

from dawnet.agent import Agent
from dawnet.inputs import load_image
from dawnet.ocr import decode as D
from dawnet.ocr.charset import Charset
from dawnet.ocr.data.datasets import to_tensor
from dawnet.ocr.lm import CharNgramLM
from dawnet.ocr.metrics import Normalization

__all__ = ["CTCAgent", "AttentionAgent", "DecoderConfig", "LineTargets", "LineImageError", "recognizer_agent",
           "prepare_line", "cer", "wer", "line_accuracy"]

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


# -- metrics: (predictions, targets) -> (total, count), summed exactly over batches and ranks --------------

def _texts(targets) -> list[str]:
    return list(targets.texts if isinstance(targets, LineTargets) else targets)


def _normalized(predictions: Sequence[str], targets) -> tuple[list[str], list[str]]:
    """Both sides through the metrics module's default normalization (NFC, whitespace runs collapsed), so the
    per-batch sums here agree with :func:`dawnet.ocr.metrics.text_metrics` over the same lines."""
    norm = Normalization()
    return [norm(p) for p in predictions], [norm(r) for r in _texts(targets)]


def cer(predictions: Sequence[str], targets) -> tuple[float, float]:
    """Character error rate: edit distance summed over lines / reference characters."""
    hyps, refs = _normalized(predictions, targets)
    return float(sum(Levenshtein.distance(h, r) for h, r in zip(hyps, refs))), float(sum(len(r) for r in refs))


def wer(predictions: Sequence[str], targets) -> tuple[float, float]:
    """Word error rate: word-level edit distance / reference words (words split on whitespace)."""
    hyps, refs = _normalized(predictions, targets)
    edits = sum(Levenshtein.distance(h.split(), r.split()) for h, r in zip(hyps, refs))
    return float(edits), float(sum(len(r.split()) for r in refs))


def line_accuracy(predictions: Sequence[str], targets) -> tuple[float, float]:
    """Fraction of lines read exactly."""
    hyps, refs = _normalized(predictions, targets)
    return float(sum(h == r for h, r in zip(hyps, refs))), float(len(refs))


DEFAULT_METRICS = {"cer": cer, "wer": wer}


# -- raw line images -> model input ---------------------------------------------------------------------

def prepare_line(raw, height: int, min_width: int = 4, max_width: int = 16384) -> tuple[torch.Tensor, list[str]]:
    """One line image (path, PIL, numpy, tensor) -> ``(1, 1, height, W)`` float tensor, ink = 1, paper = 0,
    exactly as the training data is made (:func:`dawnet.ocr.data.datasets.to_tensor`).

    Returns the tensor and notes for the user (e.g. a colour image converted to grayscale). Raises
    :class:`LineImageError` for images that cannot be a text line.
    """
    notes: list[str] = []
    if isinstance(raw, (str, os.PathLike, Image.Image)):
        im = load_image(raw)
        if im.mode not in ("L", "1", "I;16", "I", "F"):
            notes.append(f"colour image ({im.mode}) converted to grayscale")
        a = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
    elif isinstance(raw, np.ndarray):
        a = raw.astype(np.float32)
        if a.ndim == 3 and a.shape[2] in (3, 4):
            notes.append(f"colour array ({a.shape[2]} channels) converted to grayscale")
            a = a[..., :3] @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
        elif a.ndim == 3 and a.shape[2] == 1:
            a = a[..., 0]
        if raw.dtype == np.uint8:
            a = a / 255.0
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


# -- agents -----------------------------------------------------------------------------------------------

class _RecognizerAgent(Agent):
    """Shared parts of the CTC and attention agents: charset, decoder settings, batches, raw lines."""

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
        """Change how outputs are decoded (validation, ``infer``); None leaves a setting as it is."""
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

    def prepare(self, raw) -> tuple:
        x, self.notes = prepare_line(raw, self.height, self.model.min_width)
        widths = torch.tensor([x.shape[-1]])
        self._inputs = (x, widths, True)
        return x, widths

    def decode(self, outputs, inputs=None) -> list[str]:
        raise NotImplementedError

    def predict(self, outputs) -> list[str]:
        return self.decode(outputs, getattr(self, "_inputs", None))

    def postprocess(self, outputs) -> str:
        return self.decode(outputs, getattr(self, "_inputs", None))[0]

    def read(self, images: Sequence) -> list[str]:
        """Texts of several raw line images, one by one (each keeps its own width)."""
        return [self.infer(im) for im in images]


class CTCAgent(_RecognizerAgent):
    """Trains a CTC recognizer (``head="ctc"``): CTC loss summed per line, averaged over the batch.

    Args (beyond :class:`dawnet.Agent`'s):
        charset: the alphabet (a :class:`Charset`, its ``to_dict()`` or a string of characters).
        decoder: a :class:`DecoderConfig` or its dict (greedy by default).
    """

    expected_classes = "num_ctc_classes"

    def unpack(self, batch):
        images, widths, texts = self._split(batch)
        self._inputs = (images, widths, True)
        return (images, widths), LineTargets(texts)

    def compute_loss(self, outputs, targets) -> torch.Tensor:
        log_probs, lengths = outputs
        flat, target_lengths = self.charset.encode_batch(_texts(targets))
        loss = F.ctc_loss(log_probs.transpose(0, 1).float(), flat.to(log_probs.device), lengths,
                          target_lengths.to(log_probs.device), blank=self.charset.blank, reduction="sum",
                          zero_infinity=True)  # lines too long for their width add 0 instead of inf
        return loss / log_probs.shape[0]

    def decode(self, outputs, inputs=None) -> list[str]:
        log_probs, lengths = outputs
        d = self.decoder
        if d.beam == 1 and (self.lm is None or d.lm_weight == 0) and d.bonus == 0:
            ids = D.ctc_greedy(log_probs, lengths, blank=self.charset.blank)
        else:
            ids = D.ctc_beam_search(log_probs, lengths, d.beam, self.lm, self.charset, d.lm_weight, d.bonus,
                                    self.charset.blank, d.prune)
        return [self.charset.decode(i) for i in ids]


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

    expected_classes = "num_attn_classes"

    def __init__(self, *args, label_smoothing: float = 0.0, ctc_weight: float = 0.3, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0.0 <= ctc_weight < 1.0:
            raise ValueError(f"ctc_weight must be in [0, 1), got {ctc_weight}")
        self.label_smoothing, self.ctc_weight = label_smoothing, float(ctc_weight)

    def config(self) -> dict:
        return {**super().config(), "label_smoothing": self.label_smoothing, "ctc_weight": self.ctc_weight}

    def unpack(self, batch):
        images, widths, texts = self._split(batch)
        cs = self.charset
        seqs = [cs.encode(t) for t in texts]
        s = max(len(q) for q in seqs) + 1
        dec_in = torch.zeros(len(seqs), s, dtype=torch.long)
        dec_out = torch.zeros(len(seqs), s, dtype=torch.long)  # pad 0 is ignored by the loss
        for i, q in enumerate(seqs):
            dec_in[i, :len(q) + 1] = torch.tensor([cs.start, *q])
            dec_out[i, :len(q) + 1] = torch.tensor([*q, cs.end])
        self._inputs = (images, widths, False)  # teacher-forced: decode() re-runs free decoding
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
    def decode(self, outputs, inputs=None) -> list[str]:
        """Text of each line. Teacher-forced outputs are never scored: with the inputs at hand, the lines
        are decoded freely from the encoder (greedy, or beam + LM per the decoder settings)."""
        d = self.decoder
        greedy = d.beam == 1 and (self.lm is None or d.lm_weight == 0) and d.bonus == 0
        logits, lengths = outputs[:2]  # a third output (the encoder's CTC) is for the loss only
        free_run = inputs is None or inputs[2]
        if greedy and free_run:
            return [self.charset.decode(i) for i in D.attention_greedy(logits, lengths, self.charset.end)]
        if inputs is None:
            raise ValueError("attention beam decoding needs the model inputs; use agent.infer or agent.evaluate")
        x, widths = (t if t is None else t.to(self.device) for t in inputs[:2])
        was = self.model.training
        self.model.eval()
        try:
            features, flens = self.model.forward_features(x, widths)
            if greedy:
                logits, lens = self.model.forward_head(features, flens)
                ids = D.attention_greedy(logits, lens, self.charset.end)
            else:
                ids = D.attention_beam_search(self.model.head, features, flens, d.beam, self.lm, self.charset,
                                              d.lm_weight, d.bonus, self.model.max_length)
        finally:
            self.model.train(was)
        return [self.charset.decode(i) for i in ids]


def recognizer_agent(model, optimizer, charset: Charset, **kwargs) -> _RecognizerAgent:
    """The agent class that fits ``model``'s head (CTC or attention)."""
    kind = getattr(model, "head_kind", None)
    if kind == "ctc":
        return CTCAgent(model, optimizer, charset=charset, **kwargs)
    if kind == "attn":
        return AttentionAgent(model, optimizer, charset=charset, **kwargs)
    raise ValueError(f"{type(model).__name__} is not a line recognizer (no CTC or attention head)")
