"""What export and runtime share: the metadata format, the optional-dependency check, opening a session.

The metadata is one JSON string under the ONNX ``metadata_props`` key ``dawnet`` (format ``dawnet.onnx``), so a
file is self-describing: ``onnx.load(f).metadata_props`` or ONNX Runtime's ``get_modelmeta()`` show it.
"""

from __future__ import annotations

import importlib
import json
import os
from pathlib import Path

from dawnet.errors import first_line

__all__ = ["FORMAT", "VERSION", "META_KEY", "OnnxFileError", "MissingDependencyError", "require", "open_session",
           "read_metadata", "foreign_message"]

FORMAT, VERSION = "dawnet.onnx", 1
META_KEY = "dawnet"
_INSTALL = "pip install 'dawnet[onnx]'"


class OnnxFileError(ValueError):
    """A file that is not a usable dawnet ONNX export (corrupt, foreign, newer, or the wrong kind)."""


class MissingDependencyError(ImportError, ValueError):
    """An optional ONNX package is not installed. An ImportError, and a ValueError so that the CLI reports it as
    bad input (a one-line message naming the install), not as a crash."""


def require(module: str):
    """Import an optional dependency (``onnx``, ``onnxruntime``, ...) or fail with the command that installs it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingDependencyError(f"ONNX support needs the '{module}' package, which is not installed: "
                                     f"{_INSTALL}") from None


def open_session(path: str | os.PathLike, threads: int | None = None):
    """An ONNX Runtime CPU session on ``path`` and the file's dawnet metadata (a dict; empty for a foreign file).

    ``threads`` sets intra-op threads (None: ONNX Runtime's default, one per core); inter-op is sequential.
    """
    ort = require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file {path} does not exist; write one with 'dawnet export CHECKPOINT --out "
                                f"{path.name}'")
    with open(path, "rb") as f:
        if f.read(4) == b"PK\x03\x04":  # a zip: what torch.save writes
            raise OnnxFileError(f"{path} is a PyTorch checkpoint, not an ONNX file: export it with 'dawnet export "
                                f"{path} --out {path.with_suffix('.onnx').name}' (or run it without --runtime onnx)")
    opts = ort.SessionOptions()
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3  # errors only: no shape-inference chatter on stderr
    try:
        session = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # ORT raises its own exception types (InvalidProtobuf, Fail, ...) for unreadable files
        first = first_line(e)
        raise OnnxFileError(f"{path} is not a readable ONNX model ({first[:200]}); re-export it with 'dawnet export "
                            "CHECKPOINT --out FILE'") from None
    raw = session.get_modelmeta().custom_metadata_map.get(META_KEY)
    return session, _parse(raw, path)


def _parse(raw: str | None, path: Path) -> dict:
    if raw is None:
        return {}
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError:
        raise OnnxFileError(f"{path}: its '{META_KEY}' metadata is not JSON; re-export it with "
                            "'dawnet export CHECKPOINT --out FILE'") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise OnnxFileError(f"{path}: its '{META_KEY}' metadata is not dawnet's ONNX format; re-export it with "
                            "'dawnet export CHECKPOINT --out FILE'")
    if int(meta.get("version", VERSION)) > VERSION:
        raise OnnxFileError(f"{path} was written by a newer dawnet (ONNX format version {meta['version']}, this one "
                            f"reads {VERSION}); upgrade dawnet")
    return meta


def read_metadata(path: str | os.PathLike) -> dict:
    """The dawnet metadata of an exported file; :class:`OnnxFileError` for a foreign or unreadable file."""
    _, meta = open_session(path, threads=1)
    if not meta:
        raise OnnxFileError(foreign_message(path))
    return meta


def foreign_message(path) -> str:
    """The one-line error for an ONNX file that dawnet did not write."""
    return (f"{path} is an ONNX model without dawnet metadata (not written by 'dawnet export'): export a dawnet "
            "checkpoint with 'dawnet export CHECKPOINT --out FILE', or run this model with onnxruntime directly")
