"""Decoding recognizer outputs into character ids: CTC greedy and prefix beam search, attention
greedy and beam search, both beam searches with character-LM shallow fusion.

Shallow fusion scores a hypothesis y as ``log p_model(y | x) + lm_weight * log p_lm(y) + bonus * |y|``
(Gulcehre et al. 2015; the insertion bonus offsets the LM's preference for short outputs). The LM
also scores the line end. CTC greedy is vectorized over the batch; the beam searches run per line
in Python/numpy (measured in lines/s by ``benchmarks/recognizer_speed.py``).

Ids follow :class:`dawnet.ocr.charset.Charset`: CTC blank 0; attention pad 0, end n+1, start n+2.

A :class:`Reading` is what one line reads as: its text, the model's probability of each character and,
for CTC, the output frame each character came from. ``ctc_greedy_readings``, ``ctc_readings`` and
``attention_readings`` build them from outputs and decoded ids; ``ctc_reader(charset)`` is a ready decoder
for :func:`dawnet.diagnose.edit.compare`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from dawnet.ocr.lm import EOS, UNK, CharNgramLM

__all__ = ["Reading", "ctc_greedy", "ctc_greedy_readings", "ctc_readings", "ctc_align", "ctc_reader",
           "ctc_beam_search", "ctc_prefix_beam_search", "ctc_prefix_beam_search_reference", "attention_greedy",
           "attention_readings", "attention_beam_search", "lm_index", "ids_to_texts"]

NEG_INF = -math.inf


@dataclass(frozen=True)
class Reading:
    """One line as a recognizer reads it.

    Attributes:
        text: the decoded text.
        confidences: one per character of ``text``, the model's own probability for it (never the LM's):
            CTC: the highest softmax probability of that character over the frames of its run on the
            best path; attention: the softmax probability of that character at its decoding step.
        frames: CTC only (None for attention): per character, the output frame where its run starts
            (frame ``t`` covers input columns ``t * stride ...``; see the model's ``out_lengths``).
        notes: what preparing the raw image did to it (e.g. a colour image converted to grayscale).
    """

    text: str
    confidences: tuple[float, ...] = ()
    frames: tuple[int, ...] | None = None
    notes: tuple[str, ...] = ()

    def __str__(self) -> str:
        return self.text


def _ctc_outputs(log_probs, lengths):
    """``(log_probs, lengths)`` from what a CTC recognizer returns (a tuple) or a bare (N, T, C) tensor."""
    if isinstance(log_probs, (tuple, list)):
        if len(log_probs) != 2:
            raise ValueError(f"expected a CTC recognizer's (log_probs, lengths) output, got a {len(log_probs)}-tuple")
        log_probs, out_lengths = log_probs
        lengths = out_lengths if lengths is None else lengths
    if not isinstance(log_probs, torch.Tensor) or log_probs.dim() != 3:
        shape = tuple(log_probs.shape) if isinstance(log_probs, torch.Tensor) else type(log_probs).__name__
        raise ValueError(f"expected (N, T, C) CTC outputs, got {shape}")
    return log_probs, lengths


def ctc_greedy(log_probs: torch.Tensor | tuple, lengths: torch.Tensor | None = None,
               blank: int = 0) -> list[list[int]]:
    """Best-path decoding: argmax per step, merge repeats, drop blanks; (N, T, C) -> ids per line.

    ``log_probs`` may be what a dawnet CTC recognizer returns, ``(log_probs, lengths)``.
    """
    log_probs, lengths = _ctc_outputs(log_probs, lengths)
    best = log_probs.detach().argmax(-1)  # (N, T)
    n, t = best.shape
    prev = torch.cat([torch.full((n, 1), -1, dtype=best.dtype, device=best.device), best[:, :-1]], 1)
    keep = (best != prev) & (best != blank)
    if lengths is not None:
        keep &= torch.arange(t, device=best.device)[None, :] < torch.as_tensor(lengths, device=best.device)[:, None]
    return _split(best[keep].tolist(), keep.sum(1).tolist())


def _split(flat: list, counts: list[int]) -> list[list]:
    out, i = [], 0
    for c in counts:
        out.append(flat[i:i + c])
        i += c
    return out


def ctc_greedy_readings(log_probs: torch.Tensor | tuple, lengths: torch.Tensor | None = None, charset=None,
                        blank: int = 0) -> list[Reading]:
    """Best-path decoding with confidences and frames: the ids are exactly :func:`ctc_greedy`'s.

    ``charset``: a :class:`~dawnet.ocr.charset.Charset` (or anything with ``decode(ids)``), or an alphabet
    string whose character ``i`` is class ``i + 1``.
    """
    log_probs, lengths = _ctc_outputs(log_probs, lengths)
    decode = _text_decoder(charset)
    probs = log_probs.detach().float().softmax(-1)
    p, best = probs.max(-1)  # (N, T)
    n, t = best.shape
    prev = torch.cat([torch.full((n, 1), -1, dtype=best.dtype, device=best.device), best[:, :-1]], 1)
    new_run = best != prev
    valid = torch.ones_like(new_run)
    if lengths is not None:
        valid = torch.arange(t, device=best.device)[None, :] < torch.as_tensor(lengths, device=best.device)[:, None]
    run = new_run.long().cumsum(1) - 1  # (N, T) run index of each frame
    run_max = torch.zeros_like(p).scatter_reduce(1, run, torch.where(valid, p, torch.zeros_like(p)), "amax")
    keep = new_run & (best != blank) & valid
    counts = keep.sum(1).tolist()
    ids = _split(best[keep].tolist(), counts)
    confs = _split(run_max.gather(1, run)[keep].tolist(), counts)
    frames = _split(keep.nonzero()[:, 1].tolist(), counts)
    return [Reading(decode(i), tuple(c), tuple(f)) for i, c, f in zip(ids, confs, frames)]


def ctc_align(log_probs: np.ndarray | torch.Tensor, ids: Sequence[int], blank: int = 0) -> list[tuple[int, int]]:
    """The most probable CTC path of one line's (T, C) log-probs that reads ``ids`` (Viterbi forced
    alignment): per id, the ``(first, last)`` frame of its run on that path.

    For the ids :func:`ctc_greedy` gives, that path is the greedy path itself (ties aside). Raises
    ValueError when no path of T frames can read ``ids`` (too many characters for the frames).
    """
    lp = np.asarray(log_probs.detach().float().cpu() if isinstance(log_probs, torch.Tensor) else log_probs,
                    dtype=np.float64)
    if lp.ndim != 2:
        raise ValueError(f"expected (T, C) log-probabilities for one line, got shape {lp.shape}")
    return _align_batch(lp[None], [lp.shape[0]], [ids], blank)[0]


def _align_batch(lp: np.ndarray, lens: Sequence[int], ids: Sequence[Sequence[int]], blank: int
                 ) -> list[list[tuple[int, int]]]:
    """:func:`ctc_align` for each line of (N, T, C) log-probs at once (valid frames ``lens``)."""
    ids = [[int(c) for c in line] for line in ids]
    n, t_len = len(ids), lp.shape[1]
    s_len = 2 * max([len(line) for line in ids] + [0]) + 1
    labels = np.full((n, s_len), blank, dtype=np.int64)
    for i, line in enumerate(ids):
        labels[i, 1:2 * len(line):2] = line
    states = np.array([2 * len(line) + 1 for line in ids])
    real = np.arange(s_len)[None, :] < states[:, None]  # (N, S): the states of each line's label sequence
    # a character state may also be entered from two states back unless it repeats the character there
    skip = np.zeros((n, s_len), dtype=bool)
    skip[:, 3::2] = labels[:, 3::2] != labels[:, 1:-2:2]
    emit = np.take_along_axis(lp, np.broadcast_to(labels[:, None, :], (n, t_len, s_len)), axis=2)
    emit = np.where(real[:, None, :], emit, NEG_INF)  # (N, T, S)
    score = np.full((n, s_len), NEG_INF)
    score[:, :2] = emit[:, 0, :2]
    back = np.zeros((n, t_len, s_len), dtype=np.int8)  # 0: stayed, 1: came from s - 1, 2: from s - 2
    pad1, pad2 = np.full((n, 1), NEG_INF), np.full((n, 2), NEG_INF)
    lens = np.asarray(lens)
    for t in range(1, t_len):
        cand = np.stack([score, np.concatenate([pad1, score[:, :-1]], 1),
                         np.where(skip, np.concatenate([pad2, score[:, :-2]], 1), NEG_INF)])
        arg = cand.argmax(0)
        active = (t < lens)[:, None]
        back[:, t] = np.where(active, arg, 0)
        score = np.where(active, np.take_along_axis(cand, arg[None], 0)[0] + emit[:, t], score)
    out = []
    for i, line in enumerate(ids):
        if not line:
            out.append([])
            continue
        last = states[i] - 1
        s = last if score[i, last] >= score[i, last - 1] else last - 1
        if not np.isfinite(score[i, s]):
            raise ValueError(f"{len(line)} characters cannot be read from {int(lens[i])} CTC frames: the ids do "
                             "not come from these outputs")
        path = np.empty(int(lens[i]), dtype=np.int64)
        for t in range(int(lens[i]) - 1, -1, -1):
            path[t] = s
            s -= int(back[i, t, s])
        spans: list[list[int]] = []
        for t, st in enumerate(path.tolist()):
            if st % 2:
                if len(spans) == st // 2:
                    spans.append([t, t])
                else:
                    spans[-1][1] = t
        out.append([(a, b) for a, b in spans])
    return out


def ctc_readings(log_probs: torch.Tensor | tuple, lengths: torch.Tensor | None, ids: Sequence[Sequence[int]],
                 charset=None, blank: int = 0) -> list[Reading]:
    """Readings of ids found by any search (e.g. beam + LM) over (N, T, C) CTC outputs: each id's frames
    come from :func:`ctc_align` (all lines aligned at once), its confidence is its highest softmax
    probability over its run."""
    log_probs, lengths = _ctc_outputs(log_probs, lengths)
    decode = _text_decoder(charset)
    logp = log_probs.detach().float().cpu().log_softmax(-1).numpy()
    lens = [logp.shape[1]] * logp.shape[0] if lengths is None else torch.as_tensor(lengths).tolist()
    out = []
    for i, (line, spans) in enumerate(zip(ids, _align_batch(logp, lens, ids, blank))):
        confs = [math.exp(float(logp[i, a:b + 1, c].max())) for (a, b), c in zip(spans, line)]
        out.append(Reading(decode(line), tuple(confs), tuple(a for a, _ in spans)))
    return out


def _text_decoder(charset) -> Callable[[Sequence[int]], str]:
    if charset is None:
        raise ValueError("decoding to text needs the charset (a Charset or an alphabet string)")
    if isinstance(charset, str):
        alphabet = charset
        return lambda ids: "".join(alphabet[i - 1] for i in ids)
    return charset.decode


def ctc_reader(charset) -> Callable[[torch.Tensor | tuple], list[Reading]]:
    """A greedy CTC decoder to hand to :func:`dawnet.diagnose.edit.compare` (``decode=``): it takes what a
    dawnet recognizer returns, ``(log_probs, lengths)``, or a bare (N, T, C) tensor, and gives a
    :class:`Reading` per line. ``charset``: a Charset or an alphabet string (class ``i`` = ``alphabet[i - 1]``).

        compare(model, before, after, ["backbone.layers.4"], decode=ctc_reader(agent.charset))
    """
    _text_decoder(charset)

    def read(outputs) -> list[Reading]:
        log_probs, lengths = _ctc_outputs(outputs, None)
        size = len(charset) + 1
        if log_probs.shape[-1] != size:
            raise ValueError(f"the output has {log_probs.shape[-1]} classes but the charset has {len(charset)} "
                             f"characters plus the blank ({size}); pass the charset the model was trained with")
        return ctc_greedy_readings(log_probs, lengths, charset)

    return read


def lm_index(lm: CharNgramLM, charset, end_id: int | None = None) -> np.ndarray:
    """For each class id, the index of its symbol in ``lm.symbols`` (specials -> UNK, end -> EOS)."""
    size = (end_id + 2) if end_id is not None else len(charset) + 1
    table = np.full(size, lm.index[UNK], dtype=np.int64)
    for i, ch in enumerate(charset.chars, start=1):
        table[i] = lm.index.get(ch, lm.index[UNK])
    if end_id is not None:
        table[end_id] = lm.index[EOS]
    return table



def _beam_arguments(log_probs, beam: int, lm, charset, lm_weight: float) -> tuple[np.ndarray, bool]:
    """The one line's ``(T, C)`` log-probabilities as float64 and whether the LM is fused; ValueError for bad input."""
    lp = np.asarray(log_probs, dtype=np.float64)
    if lp.ndim != 2:
        raise ValueError(f"expected (T, C) log-probabilities for one line, got shape {lp.shape}")
    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    use_lm = lm is not None and lm_weight != 0.0
    if use_lm and charset is None:
        raise ValueError("LM fusion needs the charset that maps class ids to characters")
    return lp, use_lm


def ctc_prefix_beam_search(log_probs: np.ndarray, beam: int = 10, lm: CharNgramLM | None = None, charset=None,
                           lm_weight: float = 0.0, bonus: float = 0.0, blank: int = 0,
                           prune: float | None = 1e-4, lm_cache: dict | None = None) -> list[int]:
    """CTC prefix beam search for one line (Hannun et al. 2014) over (T, C) log-probabilities.

    Each step is computed for all beams x candidate characters at once with numpy; the LM's fused scores
    are looked up once per LM context (the last ``order - 1`` characters) and cached. The result is
    :func:`ctc_prefix_beam_search_reference`'s (the same scores, the same tie order), at model speed
    (``np.logaddexp`` is the reference's ``max + log1p(exp(min - max))`` with the same libm calls).

    Args:
        beam: hypotheses kept per step.
        lm, charset: a character LM and the charset mapping ids to its characters (both or neither).
        lm_weight: weight of the LM log-probability; bonus: score added per emitted character.
        prune: per step, only characters with probability >= ``prune`` extend prefixes (the best one
            always does); None extends every character (exact, slow).
        lm_cache: a dict to keep LM lookups in across calls with the same LM, charset and weight
            (:func:`ctc_beam_search` shares one over a batch); None: one per call.
    """
    lp, use_lm = _beam_arguments(log_probs, beam, lm, charset, lm_weight)
    steps, num_classes = lp.shape
    if prune:  # per step: the `beam` most probable characters that reach the threshold (the best always does)
        k = min(beam, num_classes - 1)
        top = np.argpartition(-lp, k, axis=1)[:, :k + 1] if k + 1 < num_classes else np.tile(
            np.arange(num_classes), (steps, 1))
        vals = np.take_along_axis(lp, top, 1)
        best = top[np.arange(steps), vals.argmax(1)]
        ok = (top != blank) & ((vals >= math.log(prune)) | (top == best[:, None]))
        cand_steps = [top[t][ok[t]] for t in range(steps)]
    else:
        every = np.array([c for c in range(num_classes) if c != blank], dtype=np.int64)
        cand_steps = [every] * steps
    lm_rows = _LMRows(lm, charset, lm_weight, num_classes, lm_cache) if use_lm else None
    chars = charset.chars if use_lm else None
    # the beams, in the order the reference keeps them: prefixes, texts, log p ending in blank / non-blank,
    # fused LM + bonus score, last character (-1: empty), and (with an LM) each prefix's row of LM scores
    prefixes: list[tuple] = [()]
    texts = [""]
    pb, pnb, fused = np.zeros(1), np.full(1, NEG_INF), np.zeros(1)
    last = np.full(1, -1, dtype=np.int64)
    rows = [lm_rows.get("")[0]] if use_lm else None
    neg_inf = np.full(beam * (num_classes + 1), NEG_INF)
    for t in range(steps):
        row = lp[t]
        cands = cand_steps[t]
        n, kc = len(prefixes), len(cands)
        total = np.logaddexp(pb, pnb)
        stay_b = total + row[blank]
        stay_nb = np.where(last >= 0, pnb + row[np.maximum(last, 0)], NEG_INF)
        stay_pos = np.arange(n) * (kc + 1)
        if kc:
            ext = np.where(cands[None, :] == last[:, None], pb[:, None], total[:, None]) + row[cands][None, :]
            inc = np.stack(rows)[:, cands] if use_lm else np.zeros((n, kc))
            ext_fused = (fused[:, None] + inc) + bonus
            alive = np.ones((n, kc), dtype=bool)
            # an extension that spells another beam's prefix adds to that beam (and takes its place in order)
            if n > 1:
                where = {p: i for i, p in enumerate(prefixes)}
                slot = {int(c): j for j, c in enumerate(cands.tolist())}
                for i, p in enumerate(prefixes):
                    if p:
                        b, j = where.get(p[:-1]), slot.get(p[-1])
                        if b is not None and j is not None:
                            stay_nb[i] = _logaddexp(float(stay_nb[i]), float(ext[b, j]))
                            alive[b, j] = False
                            if b < i:
                                stay_pos[i] = b * (kc + 1) + j + 1
            sel_b, sel_j = np.nonzero(alive)
            score = np.concatenate([np.logaddexp(stay_b, stay_nb) + fused,
                                    ext[sel_b, sel_j] + ext_fused[sel_b, sel_j]])
            pos = np.concatenate([stay_pos, sel_b * (kc + 1) + sel_j + 1])
        else:
            sel_b = sel_j = np.zeros(0, dtype=np.int64)
            ext = ext_fused = np.zeros((n, 0))
            score, pos = np.logaddexp(stay_b, stay_nb) + fused, stay_pos
        order = (np.lexsort((pos, -score)) if len(score) > beam else np.argsort(pos, kind="stable"))[:beam]
        ext_sel = ext[sel_b, sel_j]
        pb = np.concatenate([stay_b, neg_inf[:len(sel_b)]])[order]
        pnb = np.concatenate([stay_nb, ext_sel])[order]
        fused = np.concatenate([fused, ext_fused[sel_b, sel_j]])[order]
        last = np.concatenate([last, cands[sel_j]])[order]
        new_prefixes, new_texts, new_rows = [], [], []
        for e in order.tolist():
            if e < n:
                new_prefixes.append(prefixes[e])
                if use_lm:
                    new_texts.append(texts[e])
                    new_rows.append(rows[e])
            else:
                b, c = int(sel_b[e - n]), int(cands[sel_j[e - n]])
                new_prefixes.append(prefixes[b] + (c,))
                if use_lm:
                    text = texts[b] + chars[c - 1]
                    new_texts.append(text)
                    new_rows.append(lm_rows.get(text)[0])
        prefixes, texts, rows = new_prefixes, new_texts, new_rows
    final = np.logaddexp(pb, pnb) + fused
    if use_lm:
        final = final + np.array([lm_rows.get(s)[1] for s in texts])
    return list(prefixes[int(np.argmax(final))])


class _LMRows:
    """Per LM context: ``lm_weight * log p_lm(c | context)`` for every class id, and the line end's term."""

    def __init__(self, lm: CharNgramLM, charset, lm_weight: float, num_classes: int, cache: dict | None):
        self.lm, self.lm_weight, self.n = lm, lm_weight, lm.order - 1
        self.table = lm_index(lm, charset)[:num_classes]
        self.eos = lm.index[EOS]
        key = (id(lm), lm_weight, charset.chars)
        self.cache = {} if cache is None else cache.setdefault(key, {})

    def get(self, text: str) -> tuple[np.ndarray, float]:
        ctx = text[-self.n:] if self.n else ""
        hit = self.cache.get(ctx)
        if hit is None:
            if len(self.cache) > 200_000:
                self.cache.clear()
            logd = self.lm.log_distribution(text)
            hit = self.cache[ctx] = (self.lm_weight * logd[self.table], self.lm_weight * float(logd[self.eos]))
        return hit


def ctc_prefix_beam_search_reference(log_probs: np.ndarray, beam: int = 10, lm: CharNgramLM | None = None,
                                     charset=None, lm_weight: float = 0.0, bonus: float = 0.0, blank: int = 0,
                                     prune: float | None = 1e-4) -> list[int]:
    """:func:`ctc_prefix_beam_search` written out prefix by prefix in plain Python: the specification the
    vectorized search is tested against (the same result, several times slower). The arguments are
    :func:`ctc_prefix_beam_search`'s, without ``lm_cache``.
    """
    lp, use_lm = _beam_arguments(log_probs, beam, lm, charset, lm_weight)
    table = lm_index(lm, charset).tolist() if use_lm else None
    chars = charset.chars if use_lm else None
    eos = lm.index[EOS] if use_lm else None
    # prefix -> [log p ending in blank, log p ending in non-blank]; fused LM + bonus score and text per prefix
    beams: dict[tuple, list[float]] = {(): [0.0, NEG_INF]}
    lm_score: dict[tuple, float] = {(): 0.0}
    texts: dict[tuple, str] = {(): ""}
    log_prune = math.log(prune) if prune else NEG_INF
    num_classes = lp.shape[1]
    if prune:
        # per step: the `beam` most probable characters that reach the threshold (the best always does)
        k = min(beam, num_classes - 1)
        top = np.argpartition(-lp, k, axis=1)[:, :k + 1] if k + 1 < num_classes else np.tile(
            np.arange(num_classes), (lp.shape[0], 1))
    rows = lp.tolist()
    for t in range(lp.shape[0]):
        row = rows[t]
        if prune:
            best = int(top[t][np.argmax(lp[t, top[t]])])
            cands = [c for c in top[t].tolist() if c != blank and (row[c] >= log_prune or c == best)]
        else:
            cands = [c for c in range(num_classes) if c != blank]
        nxt: dict[tuple, list[float]] = {}
        p_blank = row[blank]
        for prefix, (pb, pnb) in beams.items():
            total = _logaddexp(pb, pnb)
            entry = nxt.get(prefix)
            if entry is None:
                entry = nxt[prefix] = [NEG_INF, NEG_INF]
            entry[0] = _logaddexp(entry[0], total + p_blank)
            last = prefix[-1] if prefix else None
            if last is not None:
                entry[1] = _logaddexp(entry[1], pnb + row[last])
            if use_lm and cands:
                dist = lm.log_distribution(texts[prefix])
            for c in cands:
                new = prefix + (c,)
                e = nxt.get(new)
                if e is None:
                    e = nxt[new] = [NEG_INF, NEG_INF]
                e[1] = _logaddexp(e[1], (pb if c == last else total) + row[c])
                if new not in lm_score:
                    lm_score[new] = lm_score[prefix] + (lm_weight * float(dist[table[c]]) if use_lm else 0.0) + bonus
                    if use_lm:
                        texts[new] = texts[prefix] + chars[c - 1]
        if len(nxt) > beam:
            scored = sorted(nxt.items(), key=lambda kv: _logaddexp(*kv[1]) + lm_score[kv[0]], reverse=True)
            beams = dict(scored[:beam])
        else:
            beams = nxt

    def final(kv):
        prefix, (pb, pnb) = kv
        s = _logaddexp(pb, pnb) + lm_score[prefix]
        if use_lm:
            s += lm_weight * float(lm.log_distribution(texts[prefix])[eos])
        return s

    return list(max(beams.items(), key=final)[0])


def _logaddexp(a: float, b: float) -> float:
    """log(exp(a) + exp(b)) for Python floats (several times faster than numpy on scalars)."""
    if a < b:
        a, b = b, a
    if b == NEG_INF:
        return a
    return a + math.log1p(math.exp(b - a))


def ctc_beam_search(log_probs: torch.Tensor, lengths: torch.Tensor | None = None, beam: int = 10,
                    lm: CharNgramLM | None = None, charset=None, lm_weight: float = 0.0, bonus: float = 0.0,
                    blank: int = 0, prune: float | None = 1e-4) -> list[list[int]]:
    """:func:`ctc_prefix_beam_search` for each line of (N, T, C) log-probs with valid lengths (N,)."""
    lp = log_probs.detach().float().cpu().numpy()
    lens = [lp.shape[1]] * lp.shape[0] if lengths is None else torch.as_tensor(lengths).tolist()
    cache: dict = {}  # LM scores per context, shared by the lines
    return [ctc_prefix_beam_search(lp[i, :lens[i]], beam, lm, charset, lm_weight, bonus, blank, prune, cache)
            for i in range(lp.shape[0])]


def attention_greedy(logits: torch.Tensor, lengths: torch.Tensor | None = None, end_id: int | None = None
                     ) -> list[list[int]]:
    """Ids of an attention model's greedy output (N, S, C), up to (not including) the end id."""
    best = logits.detach().argmax(-1).tolist()
    out = []
    for i, row in enumerate(best):
        if lengths is not None:
            row = row[:int(lengths[i])]
        if end_id is not None and end_id in row:
            row = row[:row.index(end_id)]
        out.append(row)
    return out


def attention_readings(logits: torch.Tensor, ids: Sequence[Sequence[int]], charset) -> list[Reading]:
    """Readings of attention outputs: ``logits`` (N, S, C) holds, at step ``s`` of line ``i``, the scores
    that chose ``ids[i][s]`` (a free-running greedy pass, or a teacher-forced pass over the ids a beam
    search found); a character's confidence is its softmax probability at its step."""
    probs = logits.detach().float().softmax(-1)
    out = []
    for i, line in enumerate(ids):
        line = [int(c) for c in line]
        if len(line) > probs.shape[1]:
            raise ValueError(f"line {i} has {len(line)} ids but the logits only {probs.shape[1]} steps")
        conf = probs[i, torch.arange(len(line)), torch.tensor(line, dtype=torch.long)].tolist() if line else []
        out.append(Reading(charset.decode(line), tuple(conf)))
    return out


@torch.no_grad()
def attention_beam_search(decoder, memory: torch.Tensor, lengths: torch.Tensor, beam: int = 5,
                          lm: CharNgramLM | None = None, charset=None, lm_weight: float = 0.0,
                          bonus: float = 0.0, max_length: int | None = None) -> list[list[int]]:
    """Beam search over an :class:`~dawnet.ocr.models.blocks.AttentionDecoder` for each line.

    ``memory`` (N, T, D) and ``lengths`` (N,) come from ``model.forward_features``. Each line's beam is
    run as one batch through ``decoder.step``. At beam 1 with ``lm_weight`` 0 and ``bonus`` 0 this is
    exactly greedy decoding.
    """
    from dawnet.ocr.models.blocks import default_max_length

    if beam < 1:
        raise ValueError(f"beam must be >= 1, got {beam}")
    use_lm = lm is not None and lm_weight != 0.0
    if use_lm and charset is None:
        raise ValueError("LM fusion needs the charset that maps class ids to characters")
    end = decoder.end_id
    table = torch.as_tensor(lm_index(lm, charset, end)) if use_lm else None
    num_char = decoder.num_classes
    results = []
    for i in range(memory.shape[0]):
        t = int(lengths[i])
        mem = memory[i:i + 1, :t]
        limit = default_max_length(t) if max_length is None else min(default_max_length(t), max_length)
        state, keys, mask = decoder.init_state(mem, lengths[i:i + 1])
        hyps: list[list[int]] = [[]]
        scores = torch.zeros(1, dtype=torch.float64)
        texts = [""]
        prev = torch.full((1,), decoder.start_id, dtype=torch.long, device=memory.device)
        finished: list[tuple[float, list[int]]] = []
        for _ in range(limit):
            b = len(hyps)
            logits, state = decoder.step(prev, state, mem.expand(b, -1, -1), keys.expand(b, -1, -1),
                                         mask.expand(b, -1))
            step = torch.log_softmax(decoder.mask_specials(logits), -1).double().cpu()  # (B, C)
            if use_lm:
                lm_lp = torch.from_numpy(np.stack([lm.log_distribution(s) for s in texts]))[:, table]
                lm_lp[:, :1] = 0.0  # pad is -inf already; keep it from turning into nan
                step = step + lm_weight * lm_lp
            if bonus:
                step[:, :end] += bonus
                step[:, end + 1:] += bonus
            total = (scores[:, None] + step).view(-1)
            k = min(beam, int(torch.isfinite(total).sum()))
            top = torch.topk(total, k)
            new_hyps, new_scores, new_texts, rows, toks = [], [], [], [], []
            for s, flat in zip(top.values.tolist(), top.indices.tolist()):
                r, c = divmod(flat, num_char)
                if c == end:
                    finished.append((s, hyps[r]))
                    continue
                new_hyps.append(hyps[r] + [c])
                new_scores.append(s)
                new_texts.append(texts[r] + (charset.chars[c - 1] if use_lm else ""))
                rows.append(r)
                toks.append(c)
            best_alive = max(new_scores) if new_scores else NEG_INF
            if len(finished) >= beam and max(f[0] for f in finished) >= best_alive and bonus <= 0:
                break
            if not new_hyps:
                break
            idx = torch.tensor(rows, device=memory.device)
            state = tuple(s[idx] for s in state)
            hyps, texts = new_hyps, new_texts
            scores = torch.tensor(new_scores, dtype=torch.float64)
            prev = torch.tensor(toks, dtype=torch.long, device=memory.device)
        if not finished:  # nothing ended within the length limit: take the best partial line
            finished = [(float(scores[j]), h) for j, h in enumerate(hyps)]
        results.append(max(finished, key=lambda f: f[0])[1])
    return results


def ids_to_texts(ids: Sequence[Sequence[int]], charset) -> list[str]:
    """Texts of decoded id lists."""
    return [charset.decode(x) for x in ids]
