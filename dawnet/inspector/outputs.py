"""What the inspector says about a model's output: the text read (with the model's confidence per character),
the top classes, the boxes, or the tensor's statistics; and which of these an agent gives."""

from __future__ import annotations

from typing import Any

import torch

from dawnet.diagnose.probe import primary_tensor
from dawnet.ocr.decode import attention_greedy, ctc_greedy

__all__ = ["agent_kind", "RECOGNIZERS", "summarize_output", "short", "boxes"]

RECOGNIZERS = ("ctc", "attn")
_KINDS = {"ctc": "ctc", "attention": "attn", "detection": "detector"}  # Agent.kind -> what the page shows


def agent_kind(agent) -> str:
    """``"ctc"``, ``"attn"`` (recognizers), ``"detector"`` or ``"generic"``, from the agent's ``kind``."""
    return _KINDS.get(getattr(agent, "kind", "generic"), "generic")


def summarize_output(agent, kind: str, out: Any, inputs: tuple) -> dict:
    """The JSON summary of ``out``, what ``agent``'s model gave for the prepared ``inputs``.

    Recognizers: ``text`` is what the agent's decoder reads, ``chars`` its characters with the model's
    probability for each (:meth:`read_outputs`), ``greedy`` the best-path text (the same unless a beam or an LM
    changes it). Other agents: their ``postprocess`` answer as boxes, else the top-5 classes of ``(1, K)``
    scores, else the tensor's shape and statistics.
    """
    if kind in RECOGNIZERS:
        reading = agent.read_outputs(out, *inputs[:2])[0]
        return {"kind": "text", "text": reading.text, "chars": _chars(reading.text, reading.confidences),
                "greedy": reading.text if agent.greedy else _greedy_text(agent, kind, out)}
    answer = agent.postprocess(out, inputs)
    found = boxes(answer)
    if found is not None:
        return {"kind": "boxes", "boxes": found, "count": len(found)}
    scores = primary_tensor(out)
    if scores.dim() == 2 and scores.shape[0] == 1:
        p = scores[0].float().softmax(-1)
        k = min(5, p.numel())
        v, i = p.topk(k)
        names = getattr(agent, "classes", None)
        return {
            "kind": "topk",
            "items": [
                {
                    "label": str(names[c]) if names and c < len(names) else f"class {c}",
                    "index": int(c),
                    "p": float(q),
                }
                for q, c in zip(v, i)
            ],
        }
    return {
        "kind": "tensor",
        "shape": list(scores.shape),
        "mean": float(scores.float().mean()),
        "std": float(scores.float().std()) if scores.numel() > 1 else 0.0,
    }


def _greedy_text(agent, kind: str, out: Any) -> str:
    """The best-path text of a recognizer's free-running output, whatever decoder the agent has."""
    cs = agent.charset
    if kind == "ctc":
        return cs.decode(ctc_greedy(out, blank=cs.blank)[0])
    logits, lengths = out
    return cs.decode(attention_greedy(logits, lengths, cs.end)[0])


def _chars(text: str, probs: tuple[float, ...] | list[float]) -> list[dict]:
    if len(probs) != len(text):
        return [{"c": c, "p": None} for c in text]
    return [{"c": c, "p": round(float(p), 4)} for c, p in zip(text, probs)]


def short(summary: dict) -> dict:
    """What of the original image's output the page shows beside the current one."""
    if summary["kind"] == "text":
        return {"text": summary["text"]}
    if summary["kind"] == "topk":
        return {"top": summary["items"][0]}
    if summary["kind"] == "boxes":
        return {"count": summary["count"]}
    return {}


def boxes(answer: Any) -> list[dict] | None:
    """Boxes from a detector agent's answer: ``{"boxes": (K, 4), "scores"?: (K,)}``, a list of such dicts per
    image or of ``{"box": [...], "score": ...}``, or a ``(K, 5|6)`` tensor ``x0, y0, x1, y1, score[, cls]``.
    """
    if isinstance(answer, list) and answer and isinstance(answer[0], dict) and "boxes" in answer[0]:
        answer = answer[0]
    if isinstance(answer, dict) and "boxes" in answer:
        b = torch.as_tensor(answer["boxes"], dtype=torch.float32).reshape(-1, 4)
        s = answer.get("scores")
        s = torch.as_tensor(s, dtype=torch.float32).reshape(-1) if s is not None else None
        return [
            {"box": [round(float(v), 1) for v in b[i]], "score": None if s is None else float(s[i])}
            for i in range(b.shape[0])
        ]
    if isinstance(answer, list) and all(isinstance(a, dict) and "box" in a for a in answer):
        return [{"box": [round(float(v), 1) for v in a["box"]], "score": a.get("score")} for a in answer]
    if isinstance(answer, torch.Tensor) and answer.dim() == 2 and answer.shape[1] in (5, 6):
        return [{"box": [round(float(v), 1) for v in row[:4]], "score": float(row[4])} for row in answer]
    return None
