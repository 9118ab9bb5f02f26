"""The schema of a benchmark run's ``results.json``: what :func:`~dawnet.ocr.bench.run.run_bench` writes and what
the report, the comparison and the figures read. Rates (CER, WER, accuracies, mAP) are fractions in [0, 1+]
(CER can pass 1), times are seconds unless the key says ms, GFLOPs are per line or per page."""

from __future__ import annotations

import math
from typing import Any, TypedDict

import numpy as np

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "Cost",
    "ModelResult",
    "RecognitionRow",
    "DetectionRow",
    "PipelineRow",
    "LMResult",
    "DataResult",
    "Results",
    "check_results",
    "jsonable",
]

FORMAT = "dawnet.bench"
FORMAT_VERSION = 1


class Cost(TypedDict):
    """What one model costs: :func:`~dawnet.ocr.bench.cost.recognizer_cost` / ``detector_cost``."""

    params: int
    gflops: float  # one forward pass of one line (median test width) or one letterboxed page
    input: str  # e.g. "1x32x412 line"
    latency_ms_b1: float
    latency_batch: int
    latency_ms_batch: float
    throughput_per_s: float
    unknown_ops: dict[str, int]


class ModelResult(Cost, total=False):
    """``results["models"][name]``: the cost, how it trained, and where its checkpoint is."""

    kind: str  # "recognizer" or "detector"
    head: str  # recognizers: "ctc" or "attn"
    preset: str  # detectors: "yolo" or "yolo_large"
    train_seconds: float
    train_steps: int
    batch_size: int
    train_samples: int
    train_utilization: float | None
    checkpoint: str  # relative to the run folder


class RecognitionRow(TypedDict, total=False):
    """One recognizer, decoder and test set (``results["recognition"]``)."""

    model: str
    decoder: str  # "greedy", "beamN+lm", "beamN"
    set: str  # "seen", "test", "digits"
    lines: int
    cer: float
    wer: float
    word_accuracy: float
    line_accuracy: float
    one_minus_ned: float
    lines_per_s: float
    blank_lines: int


class DetectionRow(TypedDict, total=False):
    """The detector on the test pages (``results["detection"]``)."""

    model: str
    preset: str
    set: str
    pages: int
    map50: float
    map: float


class PipelineRow(TypedDict, total=False):
    """Detector + recognizer reading whole pages (``results["pipeline"]``)."""

    detector: str
    recognizer: str
    decoder: str
    page_cer: float
    page_wer: float
    line_cer_gt_boxes: float
    detected_lines: int
    lines: int
    seconds_per_page: float


class LMResult(TypedDict):
    """The character LM (``results["lm"]``)."""

    order: int
    train_lines: int
    held_out_lines: int
    held_out_perplexity: float | None
    seconds: float
    path: str


class DataResult(TypedDict, total=False):
    """One data set (``results["data"][name]``): a built spec folder, or the in-memory seen-font lines."""

    path: str
    spec: str
    size: str
    sizes: dict[str, int]
    spec_digest: str
    manifest_sha256: str
    build_seconds: float | None
    lines: int  # seen-fonts
    sha256: str  # seen-fonts
    what: str  # seen-fonts


class Results(TypedDict):
    """A whole run: ``results.json``."""

    format: str
    format_version: int
    profile: dict[str, Any]  # dataclasses.asdict(Profile)
    budget: str
    seed: int
    created: str  # UTC, ISO 8601
    machine: dict[str, Any]  # dawnet.environment.machine() + peak_flops, load_average_end
    versions: dict[str, str | None]
    normalization: str | None
    models: dict[str, ModelResult]
    recognition: list[RecognitionRow]
    detection: list[DetectionRow]
    pipeline: list[PipelineRow]
    data: dict[str, DataResult]
    lm: LMResult
    seconds: float


def check_results(obj: Any) -> Results:
    """``obj`` when it is a dawnet bench results dict; a one-line ``ValueError`` otherwise."""
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise ValueError(f"not a dawnet bench results.json (no 'format': '{FORMAT}')")
    version = obj.get("format_version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ValueError(f"results.json has format_version {version!r}; this dawnet reads up to "
                         f"{FORMAT_VERSION}: upgrade dawnet to read it")
    return obj  # type: ignore[return-value]


def jsonable(obj: Any) -> Any:
    """``obj`` with dict keys as strings, tuples as lists, numpy scalars as Python numbers and NaN/inf as None."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (np.floating, np.integer)):
        return jsonable(obj.item())
    return obj
