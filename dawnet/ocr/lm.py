"""Character n-gram language model with interpolated modified Kneser-Ney smoothing.

The LM that shallow fusion in :mod:`dawnet.ocr.decode` adds to a recognizer's scores, as in PyLaia's
character 6-gram (which cut IAM CER 8.44 -> 7.50). Smoothing follows Chen & Goodman 1998
("An empirical study of smoothing techniques for language modeling"), interpolated, with three
discounts per order estimated from counts of counts. Every line is one sentence: it is padded on the
left with ``order - 1`` begin symbols and ends with an end symbol, so the model also scores where a
line ends. Characters never seen in training keep the probability mass of a uniform floor, and
characters outside the vocabulary share one unknown slot, so every distribution sums to 1 over
``symbols`` (vocabulary + end + unknown).

Train it on LM text only (never on test lines)::

    lm = CharNgramLM.train(texts, order=6, vocab=charset.chars)
    lm.perplexity(held_out_lines)
    lm.save("runs/lm.json.gz"); CharNgramLM.load("runs/lm.json.gz")
"""

from __future__ import annotations

import gzip
import json
import math
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

__all__ = ["CharNgramLM", "BOS", "EOS", "UNK"]

BOS = "\x02"  # begin of line (context only; control characters are never in a Charset)
EOS = "\x03"  # end of line (predicted)
UNK = "\x1a"  # any character outside the vocabulary
FORMAT, VERSION = "dawnet.charlm", 1
MIN_DISCOUNT = 0.05


class CharNgramLM:
    """Interpolated modified Kneser-Ney character n-gram model; build it with :meth:`train`.

    Attributes:
        order: n (the longest n-gram; contexts are the last ``order - 1`` characters).
        vocab: the characters it knows, in a fixed order.
        symbols: ``vocab + EOS + UNK``: the outcomes every distribution is over.
        discounts: per order 1..n, the three discounts (D1, D2, D3+).
    """

    def __init__(self, order: int, vocab: str, contexts: dict, discounts: Sequence[Sequence[float]],
                 cache_size: int = 200_000):
        if not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be an integer >= 1, got {order!r}")
        self.order, self.vocab = order, vocab
        self.symbols = vocab + EOS + UNK
        self.index = {c: i for i, c in enumerate(self.symbols)}
        self.discounts = [tuple(d) for d in discounts]
        # context string (length k-1 for order k) -> (total count, backoff mass, {symbol: discounted count})
        self._ctx = contexts
        self._cache: dict[str, np.ndarray] = {}
        self._cache_size = cache_size
        self._uniform = np.full(len(self.symbols), 1.0 / len(self.symbols))

    # ------------------------------------------------------------------ training
    @classmethod
    def train(cls, texts: Iterable[str], order: int = 6, vocab: str | Iterable[str] | None = None) -> CharNgramLM:
        """Count n-grams of ``texts`` (one line each) and estimate the smoothed model.

        ``vocab`` (e.g. ``charset.chars``) lists characters the model must give probability to even if
        the text never shows them; characters of the text are added to it.
        """
        if not isinstance(order, int) or order < 1:
            raise ValueError(f"order must be an integer >= 1, got {order!r}")
        pad = BOS * (order - 1)
        counts = [Counter() for _ in range(order + 1)]  # counts[k]: raw counts of k-grams
        seen: set[str] = set()
        lines = 0
        for text in texts:
            if not isinstance(text, str):
                raise TypeError(f"LM training texts must be str lines, got {type(text).__name__}")
            text = text.replace(BOS, "").replace(EOS, "").replace(UNK, "")
            seen.update(text)
            s = pad + text + EOS
            lines += 1
            top = counts[order]
            for i in range(order - 1, len(s)):  # every position that predicts a real symbol
                top[s[i - order + 1:i + 1]] += 1
        if lines == 0:
            raise ValueError("no training text: give the LM at least one line of text")
        chars = set(seen) | set("".join(vocab) if vocab is not None else "")
        bad = [c for c in chars if c in (BOS, EOS, UNK) or len(c) != 1]
        if bad:
            raise ValueError(f"vocabulary entries must be single non-control characters, got {bad!r}")
        vocab_s = "".join(sorted(chars))
        # Lower orders use continuation counts: the number of distinct characters seen before a k-gram
        # (Kneser-Ney). With order-1 begin symbols of padding, every predicted k-gram has a left neighbour.
        for k in range(order - 1, 0, -1):
            cont = counts[k]
            for gram in counts[k + 1]:
                cont[gram[1:]] += 1
        contexts: dict[str, tuple[float, float, dict[str, float]]] = {}
        discounts = []
        for k in range(1, order + 1):
            d = _discounts(counts[k])
            discounts.append(d)
            by_ctx: dict[str, dict[str, int]] = {}
            for gram, c in counts[k].items():
                by_ctx.setdefault(gram[:-1], {})[gram[-1]] = c
            for h, followers in by_ctx.items():
                total = float(sum(followers.values()))
                mass, kept = 0.0, {}
                for w, c in followers.items():
                    dc = d[min(c, 3) - 1]
                    mass += dc
                    if c - dc > 0:
                        kept[w] = float(c - dc)
                contexts[h] = (total, mass, kept)
        return cls(order, vocab_s, contexts, discounts)

    # ------------------------------------------------------------------ queries
    def _context(self, context: str) -> str:
        """The last order-1 characters of ``BOS... + context``, with unknown characters mapped."""
        n = self.order - 1
        if n == 0:
            return ""
        ctx = context[-n:]
        ctx = "".join(c if c in self.index and c != EOS else UNK for c in ctx)
        return (BOS * (n - len(ctx)) + ctx) if len(ctx) < n else ctx

    def distribution(self, context: str = "") -> np.ndarray:
        """P(symbol | context) over :attr:`symbols` (sums to 1); ``context`` is the line so far."""
        h = self._context(context)
        p = self._cache.get(h)
        if p is not None:
            return p
        p = self._uniform.copy()
        index = self.index
        for k in range(1, self.order + 1):
            entry = self._ctx.get(h[len(h) - (k - 1):] if k > 1 else "")
            if entry is None:  # unseen context: the lower-order estimate stands
                continue
            total, mass, kept = entry
            p *= mass / total
            for w, v in kept.items():
                p[index[w]] += v / total
        if len(self._cache) >= self._cache_size:
            self._cache.clear()
        self._cache[h] = p
        return p

    def log_distribution(self, context: str = "") -> np.ndarray:
        """Natural-log probabilities of :attr:`symbols` after ``context``."""
        return np.log(self.distribution(context))

    def prob(self, char: str, context: str = "") -> float:
        """P(char | context); ``char`` may be :data:`EOS`; characters outside the vocabulary get the UNK slot."""
        return float(self.distribution(context)[self.index.get(char, self.index[UNK])])

    def log_prob(self, char: str, context: str = "") -> float:
        return math.log(self.prob(char, context))

    def score(self, text: str, eos: bool = True) -> float:
        """Natural-log probability of a whole line (with its end when ``eos``)."""
        total = sum(self.log_prob(c, text[:i]) for i, c in enumerate(text))
        return total + (self.log_prob(EOS, text) if eos else 0.0)

    def perplexity(self, texts: Iterable[str]) -> float:
        """Per-symbol perplexity over lines (each character plus the line end)."""
        total, n = 0.0, 0
        for t in texts:
            total += self.score(t)
            n += len(t) + 1
        if n == 0:
            raise ValueError("perplexity needs at least one line of text")
        return math.exp(-total / n)

    # ------------------------------------------------------------------ storage
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "order": self.order, "vocab": self.vocab,
                "discounts": [list(d) for d in self.discounts],
                "contexts": {h: [t, m, kept] for h, (t, m, kept) in self._ctx.items()}}

    @classmethod
    def from_dict(cls, d: dict) -> CharNgramLM:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError("not a dawnet character LM (expected format 'dawnet.charlm'); train one with "
                             "CharNgramLM.train or `dawnet train charlm --data SPEC`")
        if d.get("version", VERSION) > VERSION:
            raise ValueError(f"LM format version {d['version']} is newer than this dawnet reads; upgrade dawnet")
        contexts = {h: (float(t), float(m), {w: float(v) for w, v in kept.items()})
                    for h, (t, m, kept) in d["contexts"].items()}
        return cls(int(d["order"]), d["vocab"], contexts, d["discounts"])

    def save(self, path: str | os.PathLike) -> Path:
        """Write gzipped JSON atomically (:func:`dawnet.atomic.atomic_write`: the process umask, stale
        temporaries of killed writes removed)."""
        from dawnet.atomic import atomic_write

        path = Path(path)
        with atomic_write(path) as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as f:
            f.write(json.dumps(self.to_dict(), ensure_ascii=True).encode())
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> CharNgramLM:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"language model {path} does not exist; train one with "
                                    "`dawnet train charlm --data SPEC --out DIR`")
        try:
            with gzip.open(path, "rb") as f:
                d = json.loads(f.read().decode())
        except (OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"{path} is not a readable dawnet LM (gzipped JSON): {e}") from None
        return cls.from_dict(d)

    @property
    def num_contexts(self) -> int:
        """How many histories (contexts of up to ``order - 1`` characters) the model stores a distribution for."""
        return len(self._ctx)

    def __repr__(self) -> str:
        return f"CharNgramLM(order={self.order}, vocab={len(self.vocab)} chars, contexts={self.num_contexts})"


def _discounts(counts: Counter) -> tuple[float, float, float]:
    """Modified KN discounts D1, D2, D3+ from counts of counts (Chen & Goodman 1998, eq. 26).

    Small or degenerate samples fall back to D_i = clamp(estimate, MIN_DISCOUNT, i) and, when a count of counts is
    zero, to the plain KN estimate Y for all three, so every D(c) <= c and distributions still sum to 1.
    """
    coc = Counter(v for v in counts.values() if v <= 4)
    n1, n2, n3, n4 = (coc.get(i, 0) for i in (1, 2, 3, 4))
    if n1 == 0 or n2 == 0:
        y = n1 / (n1 + 2 * n2) if n1 + n2 else 0.5
        return (min(max(y, 0.1), 1.0),) * 3
    y = n1 / (n1 + 2 * n2)
    d1 = 1 - 2 * y * n2 / n1
    d2 = 2 - 3 * y * n3 / n2 if n3 else d1  # no counts of 3: no evidence for a larger discount
    d3 = 3 - 4 * y * n4 / n3 if n3 and n4 else d2
    # a small positive floor keeps some mass for lower orders, so no symbol ever gets probability 0
    return (min(max(d1, MIN_DISCOUNT), 1.0), min(max(d2, MIN_DISCOUNT), 2.0), min(max(d3, MIN_DISCOUNT), 3.0))
