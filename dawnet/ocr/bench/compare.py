"""Two benchmark runs side by side: every shared metric with both values and the difference, and the
protocol differences (profile, data checksums, seed, machine) that make a comparison unfair."""

from __future__ import annotations

from dawnet.ocr.bench.report import grid
from dawnet.ocr.bench.schema import Results, check_results

__all__ = ["compare"]


def _rows_by_key(results: Results) -> dict:
    out = {}
    for r in results.get("recognition", []):
        for k in ("cer", "wer", "word_accuracy", "one_minus_ned"):
            out[(f"{r['model']} ({r['decoder']})", f"{k} {r['set']}")] = r.get(k)
    for r in results.get("detection", []):
        out[(f"{r['model']} ({r.get('preset', '')})", "mAP@0.5 pages")] = r.get("map50")
        out[(f"{r['model']} ({r.get('preset', '')})", "mAP@0.5:0.95 pages")] = r.get("map")
    for r in results.get("pipeline", []):
        out[(f"{r['detector']} + {r['recognizer']}", "page CER")] = r.get("page_cer")
    for name, m in results.get("models", {}).items():
        out[(name, "GFLOPs")] = m.get("gflops")
        out[(name, "latency ms b1")] = m.get("latency_ms_b1")
        out[(name, "train s")] = m.get("train_seconds")
    return out


def _value(v, pct: bool) -> str:
    return "-" if v is None else (f"{100 * v:.2f}" if pct else f"{v:.3f}")


def compare(a: Results, b: Results, names: tuple[str, str] = ("A", "B")) -> str:
    """Two runs side by side: every shared metric with both values and the difference, then the protocol
    differences (profile, data checksums, machine) that make a comparison unfair."""
    check_results(a)
    check_results(b)
    ra, rb = _rows_by_key(a), _rows_by_key(b)
    rows = []
    for key in list(dict.fromkeys(list(ra) + list(rb))):
        va, vb = ra.get(key), rb.get(key)
        pct = not any(w in key[1] for w in ("GFLOPs", "ms", "train s", "NED"))
        d = "-" if va is None or vb is None else (f"{100 * (vb - va):+.2f}" if pct else f"{vb - va:+.3f}")
        rows.append([key[0], key[1] + (" (%)" if pct else ""), _value(va, pct), _value(vb, pct), d])
    out = grid(["model", "metric", names[0], names[1], "B - A"], rows)
    notes = []
    if a["profile"] != b["profile"]:
        notes.append(f"different profiles: {a['profile']['name']} vs {b['profile']['name']}")
    for d in set(a.get("data", {})) | set(b.get("data", {})):
        ca = a.get("data", {}).get(d, {}).get("spec_digest") or a.get("data", {}).get(d, {}).get("sha256")
        cb = b.get("data", {}).get(d, {}).get("spec_digest") or b.get("data", {}).get(d, {}).get("sha256")
        if ca != cb:
            notes.append(f"data {d} differs ({ca} vs {cb})")
    if a.get("seed") != b.get("seed"):
        notes.append(f"seeds differ ({a.get('seed')} vs {b.get('seed')})")
    ma, mb = a.get("machine", {}), b.get("machine", {})
    for k in ("cpu_model", "gpu", "torch_threads", "device"):
        if ma.get(k) != mb.get(k):
            notes.append(f"machine {k} differs ({ma.get(k)} vs {mb.get(k)}): compare timings with care")
    if notes:
        out += "\n\nProtocol differences:\n" + "\n".join(f"- {n}" for n in notes)
    return out
