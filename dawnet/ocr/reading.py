"""Reading with a recognizer checkpoint: load it, set its decoder, read and score a data set of lines.

What ``dawnet eval``, ``dawnet read``, page reading and the bench share::

    agent = load_recognizer("runs/crnn/best.pt")
    configure_decoder(agent, lm_path="lm.json.gz")          # beam 10, LM weight 0.5, bonus 1.0
    result = evaluate_lines(agent, dataset)                  # cer, wer, ..., lines_per_s, pairs, blank

Errors are ``ValueError`` / ``FileNotFoundError`` (and :class:`dawnet.checkpoint.CheckpointError` for a
checkpoint that cannot be read) with one-line messages that name the fix.
"""

from __future__ import annotations

import os
import time

__all__ = ["load_recognizer", "configure_decoder", "evaluate_lines"]


def load_recognizer(path: str | os.PathLike, map_location: str = "cpu"):
    """A CTC or attention agent from a checkpoint, with a clear error for anything else."""
    from dawnet.agent import Agent
    from dawnet.checkpoint import load_checkpoint
    from dawnet.ocr.agents import AttentionAgent, CTCAgent

    try:
        with open(path, "rb") as f:
            if f.read(2) == b"\x1f\x8b":  # gzip: what CharNgramLM.save writes
                raise ValueError(f"{path} is a gzip file (a character LM from 'dawnet train charlm'?), not a "
                                 "recognizer checkpoint: pass an LM with --lm and a checkpoint from "
                                 "'dawnet train crnn|attn' as CHECKPOINT")
    except OSError:
        pass  # missing or unreadable: load_checkpoint says what is wrong
    state = load_checkpoint(path, map_location="cpu")
    if not isinstance(state, dict) or "agent" not in state:
        raise ValueError(f"{path} is not a dawnet checkpoint (no agent in it); pass a file from 'dawnet train'")
    cls = state["agent"].get("class", "?")
    ours = {f"{c.__module__}.{c.__qualname__}" for c in (CTCAgent, AttentionAgent)}
    if cls not in ours:
        model = (state.get("model") or {}).get("spec") or {}
        raise ValueError(f"{path} holds a {cls.rsplit('.', 1)[-1]} (model {model.get('name', '?')!r}), not a "
                         "text-line recognizer: use a checkpoint from 'dawnet train crnn' or 'dawnet train attn' "
                         "(a detector finds lines on a page; it does not read them)")
    del state
    return Agent.load(path, map_location=map_location)


def configure_decoder(agent, lm_path: str | os.PathLike | None = None, beam: int | None = None,
                      lm_weight: float = 0.5, bonus: float | None = None) -> None:
    """Set ``agent``'s decoder as ``dawnet read``/``eval`` do: greedy without an LM; with ``lm_path``, beam 10
    (unless ``beam``), LM weight ``lm_weight`` and a per-character bonus of 1.0 (unless ``bonus``)."""
    from dawnet.ocr.lm import CharNgramLM

    if beam is not None and beam < 1:
        raise ValueError(f"--beam must be >= 1, got {beam}")
    lm = CharNgramLM.load(lm_path) if lm_path else None
    agent.set_decoder(beam=beam or (10 if lm else 1), lm=lm, lm_weight=lm_weight if lm else 0.0,
                      bonus=bonus if bonus is not None else (1.0 if lm else 0.0))


def evaluate_lines(agent, dataset, batch_size: int = 16, progress: bool = True) -> dict:
    """Read every line of ``dataset`` with ``agent``'s decoder and score it (:func:`dawnet.ocr.metrics.text_metrics`).

    Returns the metrics, ``lines_per_s`` (model + decoding time), ``pairs`` ``[(source, ref, hyp)]`` and
    ``blank``: the sources of blank lines (no ink: :func:`dawnet.images.is_blank`, as the datasets flag them),
    which are neither read nor scored (``lines`` counts the scored ones).
    """
    from tqdm.auto import tqdm

    from dawnet.ocr.lines import line_loader
    from dawnet.ocr.metrics import text_metrics

    refs, hyps, sources, blank, seconds = [], [], [], [], 0.0
    for batch in tqdm(line_loader(dataset, batch_size, shuffle=False), desc="reading", unit="batch",
                      disable=not progress, leave=False):
        flags = batch["blank"]  # the datasets' rule: dawnet.images.is_blank on the image as read
        keep = [i for i, is_blank in enumerate(flags) if not is_blank]
        blank += [s for s, is_blank in zip(batch["sources"], flags) if is_blank]
        if not keep:
            continue
        x, widths = batch["images"], batch["widths"]
        if len(keep) < len(flags):
            x, widths = x[keep], widths[keep]
            x = x[..., :int(widths.max())]
        x, widths = x.to(agent.device), widths.to(agent.device)
        start = time.perf_counter()
        readings = agent.read_batch(x, widths)
        seconds += time.perf_counter() - start
        refs += [batch["texts"][i] for i in keep]
        hyps += [r.text for r in readings]
        sources += [batch["sources"][i] for i in keep]
    result = text_metrics(refs, hyps) if refs else {"lines": 0}
    result["lines_per_s"] = len(refs) / seconds if seconds else float("nan")
    result["pairs"] = list(zip(sources, refs, hyps))
    result["blank"] = blank
    return result
