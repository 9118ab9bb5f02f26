"""The alphabet of a recognizer: characters <-> integer ids for CTC and attention decoders.

A character is one Unicode code point after NFC normalization; the space is a character like any
other, so multi-word lines round-trip. Ids are laid out so that a character has the same id for both
decoder kinds::

    CTC:        0 = blank,  1..n = characters                          num_ctc_classes  = n + 1
    attention:  0 = pad,    1..n = characters, n+1 = end, n+2 = start    num_attn_classes = n + 3

Characters outside the alphabet raise :class:`UnknownCharacterError` listing them, or, when the
caller asks (``unknown="map"``) and the charset has an unknown token, map to that token; every
mapped character is counted in :attr:`Charset.unknown_counts` and reported with a warning the first
time it is seen, never dropped silently. Decoding *search* (greedy, beam, LM fusion) lives in
``dawnet.ocr.decode``; this module only converts between text and ids.
"""

from __future__ import annotations

import unicodedata
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence

__all__ = ["Charset", "UnknownCharacterError", "normalize", "describe_chars"]

FORMAT_VERSION = 1


def normalize(text: str) -> str:
    """Unicode NFC normalization: the one normalization applied to every text before encoding."""
    if not isinstance(text, str):
        raise TypeError(f"expected a str, got {type(text).__name__}")
    return unicodedata.normalize("NFC", text)


def describe_chars(chars: Iterable[str]) -> str:
    """``'é' (U+00E9), ' ' (U+0020)``: characters with their code points, readable in error messages."""
    return ", ".join(f"{c!r} (U+{ord(c):04X})" for c in chars)


class UnknownCharacterError(ValueError):
    """Text holds characters outside the alphabet; ``.counts`` maps each such character to its count."""

    def __init__(self, counts: Counter, where: str = ""):
        self.counts = Counter(counts)
        listed = ", ".join(f"{c!r} (U+{ord(c):04X}) x{n}" for c, n in self.counts.most_common())
        where = f" in {where}" if where else ""
        super().__init__(
            f"{len(self.counts)} character(s) outside the alphabet{where}: {listed}. "
            "Fix: build the charset from texts that include them (Charset.from_texts), or encode with "
            "unknown='map' using a charset created with an unknown token (Charset(chars, unknown='\\ufffd'))."
        )


class Charset:
    """An ordered alphabet with CTC and attention id layouts (see the module docstring).

    Args:
        chars: the characters, as a string or a sequence of one-code-point strings, in id order
            (NFC-normalized; duplicates, control characters and multi-code-point entries are refused).
        unknown: optional unknown token (one character, e.g. ``"\\ufffd"``); it becomes the last
            character of the alphabet (if not already in it) and is what ``encode(..., unknown="map")``
            maps out-of-alphabet characters to.

    Example:
        >>> cs = Charset("ab ")
        >>> cs.encode("ab a")
        [1, 2, 3, 1]
        >>> cs.decode([1, 2, 3, 1])
        'ab a'
        >>> cs.num_ctc_classes, cs.num_attn_classes
        (4, 6)
    """

    blank = 0  # CTC blank id
    pad = 0  # attention padding id (never a target; ignore_index for the loss)

    def __init__(self, chars: str | Sequence[str], unknown: str | None = None):
        if isinstance(chars, str):
            items = list(normalize(chars))
        else:
            items = [normalize(c) if isinstance(c, str) else c for c in chars]
        bad = [c for c in items if not isinstance(c, str) or len(c) != 1]
        if bad:
            raise ValueError(
                f"each character must be one Unicode code point after NFC, got {bad[:10]!r}; "
                "pass a string or a list of single characters"
            )
        control = [c for c in items if unicodedata.category(c) == "Cc"]
        if control:
            raise ValueError(
                f"control characters cannot be part of an alphabet: {describe_chars(sorted(set(control)))}; "
                "strip newlines/tabs from line transcriptions (a line is one line of text)"
            )
        dupes = [c for c, n in Counter(items).items() if n > 1]
        if dupes:
            raise ValueError(f"duplicate characters in the alphabet: {describe_chars(dupes)}")
        if unknown is not None:
            unknown = normalize(unknown)
            if len(unknown) != 1:
                raise ValueError(f"the unknown token must be one character, got {unknown!r}")
            if unknown not in items:
                items.append(unknown)
        if not items:
            raise ValueError("an alphabet needs at least one character")
        self._chars: tuple[str, ...] = tuple(items)
        self._index: dict[str, int] = {c: i + 1 for i, c in enumerate(items)}
        self.unknown: str | None = unknown
        self.unknown_counts: Counter = Counter()  # every character mapped to `unknown`, ever, by encode

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_texts(cls, texts: Iterable[str], unknown: str | None = None, extra: str = "") -> Charset:
        """The alphabet of ``texts`` (plus ``extra``), sorted by code point so it is reproducible."""
        seen: set[str] = set(normalize(extra))
        for t in texts:
            seen.update(normalize(t))
        return cls("".join(sorted(seen)), unknown=unknown)

    def to_dict(self) -> dict:
        """A JSON-serializable description (stored in checkpoints); :meth:`from_dict` rebuilds it."""
        return {"format": "dawnet.charset", "version": FORMAT_VERSION, "chars": "".join(self._chars),
                "unknown": self.unknown}

    @classmethod
    def from_dict(cls, d: dict) -> Charset:
        if not isinstance(d, dict) or "chars" not in d:
            raise ValueError(f"not a charset dict (expected keys 'chars' and 'unknown'): {d!r:.200}")
        if d.get("version", FORMAT_VERSION) > FORMAT_VERSION:
            raise ValueError(f"charset format version {d['version']} is newer than this dawnet supports "
                             f"({FORMAT_VERSION}); upgrade dawnet")
        return cls(d["chars"], unknown=d.get("unknown"))

    # ------------------------------------------------------------------ properties
    @property
    def chars(self) -> str:
        """The characters in id order (id of ``chars[i]`` is ``i + 1``)."""
        return "".join(self._chars)

    def __len__(self) -> int:
        return len(self._chars)

    def __contains__(self, char: str) -> bool:
        return char in self._index

    def __iter__(self):
        return iter(self._chars)

    def __eq__(self, other) -> bool:
        return isinstance(other, Charset) and self._chars == other._chars and self.unknown == other.unknown

    def __hash__(self) -> int:
        return hash((self._chars, self.unknown))

    def __repr__(self) -> str:
        shown = self.chars if len(self) <= 40 else self.chars[:37] + "..."
        return f"Charset({shown!r}, n={len(self)}, unknown={self.unknown!r})"

    @property
    def num_ctc_classes(self) -> int:
        """Output size of a CTC head: blank + characters."""
        return len(self._chars) + 1

    @property
    def end(self) -> int:
        """Attention end-of-sequence id."""
        return len(self._chars) + 1

    @property
    def start(self) -> int:
        """Attention start-of-sequence id (decoder input only, never predicted)."""
        return len(self._chars) + 2

    @property
    def num_attn_classes(self) -> int:
        """Output/embedding size of an attention decoder: pad + characters + end + start."""
        return len(self._chars) + 3

    @property
    def unknown_id(self) -> int | None:
        return None if self.unknown is None else self._index[self.unknown]

    def index(self, char: str) -> int:
        """The id of one character (1..n)."""
        try:
            return self._index[char]
        except KeyError:
            raise UnknownCharacterError(Counter([char])) from None

    # ------------------------------------------------------------------ encode / decode
    def normalize(self, text: str) -> str:
        """NFC normalization (the same for every charset; see :func:`normalize`)."""
        return normalize(text)

    def missing(self, texts: str | Iterable[str]) -> Counter:
        """Characters of ``texts`` that are not in the alphabet, with counts (after NFC)."""
        if isinstance(texts, str):
            texts = [texts]
        out: Counter = Counter()
        for t in texts:
            out.update(c for c in normalize(t) if c not in self._index)
        return out

    def encode(self, text: str, unknown: str = "error") -> list[int]:
        """Ids (1..n) of ``text`` after NFC. ``unknown``: ``"error"`` raises, ``"map"`` maps to the token."""
        if unknown not in ("error", "map"):
            raise ValueError(f"unknown must be 'error' or 'map', got {unknown!r}")
        text = normalize(text)
        index = self._index
        try:
            return [index[c] for c in text]
        except KeyError:
            pass
        missing = Counter(c for c in text if c not in index)
        if unknown == "error":
            raise UnknownCharacterError(missing, where=f"{text!r:.80}")
        if self.unknown is None:
            raise ValueError(
                f"unknown='map' needs a charset with an unknown token; this one has none and the text holds "
                f"{describe_chars(missing)}. Fix: Charset(chars, unknown='\\ufffd')"
            )
        new = [c for c in missing if c not in self.unknown_counts]
        self.unknown_counts.update(missing)
        if new:
            warnings.warn(f"mapping characters outside the alphabet to {self.unknown!r}: "
                          f"{describe_chars(new)} (counted in Charset.unknown_counts)", stacklevel=2)
        uid = index[self.unknown]
        return [index.get(c, uid) for c in text]

    def decode(self, ids: Iterable[int]) -> str:
        """Text of character ids; the special ids (blank/pad 0, end, start) are skipped, not collapsed.

        This is a plain lookup: CTC collapsing of repeats belongs to ``dawnet.ocr.decode``.
        """
        n = len(self._chars)
        chars = self._chars
        out = []
        for i in ids:
            i = int(i)
            if 1 <= i <= n:
                out.append(chars[i - 1])
            elif i in (0, n + 1, n + 2):
                continue
            else:
                raise ValueError(f"id {i} is outside this charset (valid: 0..{n + 2}); was the model trained "
                                 "with another charset?")
        return "".join(out)

    def encode_attn(self, text: str, unknown: str = "error") -> list[int]:
        """``[start] + encode(text) + [end]``: a teacher-forcing sequence for an attention decoder."""
        return [self.start, *self.encode(text, unknown=unknown), self.end]

    def decode_attn(self, ids: Iterable[int]) -> str:
        """Text of an attention output: stops at the first end id, skips start and pad."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.end:
                break
            out.append(i)
        return self.decode(out)

    def encode_batch(self, texts: Sequence[str], unknown: str = "error"):
        """CTC targets for ``torch.nn.CTCLoss``: ``(targets (sum L,) long, lengths (N,) long)``."""
        import torch

        encoded = [self.encode(t, unknown=unknown) for t in texts]
        lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
        flat = torch.tensor([i for e in encoded for i in e], dtype=torch.long)
        return flat, lengths
