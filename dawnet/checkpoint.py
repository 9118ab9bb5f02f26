"""Checkpoint files: atomic writes, ``weights_only`` loads, and errors that name the file and the fix.

A dawnet checkpoint is one ``torch.save``d dict of tensors and plain Python data (see ``Agent.state_dict``),
marked with ``format: "dawnet.checkpoint"``. Writing goes to a temporary file in the same folder, is flushed to
disk, then renamed over the target, so a crash or kill while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import torch
from torch import nn

from dawnet.atomic import atomic_save
from dawnet.errors import first_line

__all__ = [
    "CheckpointError",
    "FORMAT",
    "VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "load_model_weights",
    "strip_prefix",
    "is_plain",
]

FORMAT = "dawnet.checkpoint"
VERSION = 1


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be read, or that does not fit the model it is loaded into."""


def save_checkpoint(state: dict, path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename); returns the path."""
    return atomic_save(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | os.PathLike | io.BytesIO, map_location=None) -> dict:
    """Read a dawnet checkpoint with ``torch.load(weights_only=True)``; clear errors for bad files."""
    name = str(path) if isinstance(path, (str, os.PathLike)) else getattr(path, "name", None) or "checkpoint"
    if isinstance(path, (str, os.PathLike)):
        p = Path(path)
        if not p.exists():
            raise FileNotFoundError(f"checkpoint {name} does not exist")
        if p.is_dir():
            raise CheckpointError(f"{name} is a folder, not a checkpoint file")
        if p.stat().st_size == 0:
            raise CheckpointError(f"checkpoint {name} is empty (0 bytes): it was never written completely; "
                                  "use an earlier checkpoint")
    _check_archive(path, name)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        if "weights only" not in str(e).lower():
            raise _corrupt(path, name, e) from None
        raise CheckpointError(
            f"checkpoint {name} holds objects other than tensors and plain data, which dawnet refuses to "
            f"unpickle (weights_only=True): {first_line(e)}"
        ) from None
    except Exception as e:  # a damaged archive can fail anywhere in torch's reader (IndexError, KeyError, ...)
        raise _corrupt(path, name, e) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{name} is not a dawnet checkpoint (no format marker). If it is a plain state dict, load it "
            "with model.load_state_dict(torch.load(path, weights_only=True)) and build an Agent around "
            "the model"
        )
    version = state.get("version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise CheckpointError(f"checkpoint {name} is damaged: its format version is {version!r}, not a number")
    if version > VERSION:
        raise CheckpointError(f"checkpoint {name} has format version {state['version']}, newer than this "
                              f"dawnet reads ({VERSION}); upgrade dawnet")
    return state


def _check_archive(path, name: str) -> None:
    """Refuse files that are not zip archives, and archives whose members fail their CRC-32 (torch never checks)."""
    start = path.tell() if hasattr(path, "tell") else None
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile as e:
        if _starts_like_zip(path):
            raise _corrupt(path, name, e) from None
        raise CheckpointError(
            f"{name} is not a readable torch checkpoint (not a zip archive: corrupt, truncated, or another kind "
            "of file). Use a checkpoint written by Agent.save"
        ) from None
    except Exception as e:  # damaged headers raise struct/zlib/OS/NotImplemented errors from zipfile
        raise _corrupt(path, name, e) from None
    finally:
        if start is not None:
            path.seek(start)
    if bad is not None:
        raise _corrupt(path, name, ValueError(f"member {bad} fails its CRC-32 check"))


def _starts_like_zip(path) -> bool:
    try:
        if hasattr(path, "read"):
            start = path.tell()
            head = path.read(4)
            path.seek(start)
        else:
            with open(path, "rb") as f:
                head = f.read(4)
    except OSError:
        return False
    return head == b"PK\x03\x04"


def _corrupt(path, name: str, e: BaseException) -> CheckpointError:
    size = os.path.getsize(path) if isinstance(path, (str, os.PathLike)) else "?"
    return CheckpointError(
        f"checkpoint {name} ({size} bytes) is truncated or corrupt and cannot be read: {first_line(e)}. "
        "Use an earlier checkpoint; dawnet's own saves are atomic, so this file was written or copied "
        "by something else"
    )


def is_plain(value, tensors: bool = False, _depth: int = 0) -> bool:
    """True for None/bool/int/float/str and lists/tuples/dicts of those (tensors too when ``tensors``): the
    only values a checkpoint may pass as keyword arguments to the classes it names."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return True
    if tensors and isinstance(value, torch.Tensor):
        return True
    if _depth > 32:
        return False
    if type(value) in (list, tuple):
        return all(is_plain(v, tensors, _depth + 1) for v in value)
    if type(value) is dict:
        return all(isinstance(k, (str, int)) and is_plain(v, tensors, _depth + 1) for k, v in value.items())
    return False


def strip_prefix(state_dict: dict, prefix: str = "module.") -> dict:
    """Remove a wrapper's key prefix (``module.`` from DataParallel/DDP, ``_orig_mod.`` from compile)."""
    if state_dict and all(k.startswith(prefix) for k in state_dict):
        return {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def load_model_weights(model: nn.Module, state_dict: dict, source: str = "checkpoint") -> None:
    """Strictly load weights into ``model``, with one error listing every missing, extra or misshapen key."""
    state_dict = strip_prefix(strip_prefix(state_dict, "module."), "_orig_mod.")
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    extra = [k for k in state_dict if k not in own]
    shapes = [
        f"{k} saved {tuple(state_dict[k].shape)}, model {tuple(own[k].shape)}"
        for k in own
        if k in state_dict and hasattr(state_dict[k], "shape") and state_dict[k].shape != own[k].shape
    ]
    if missing or extra or shapes:
        parts = []
        if missing:
            parts.append(f"missing from {source}: {_listing(missing)}")
        if extra:
            parts.append(f"not in the model: {_listing(extra)}")
        if shapes:
            parts.append(f"shape mismatch: {_listing(shapes)}")
        raise CheckpointError(
            f"the weights in {source} do not fit {type(model).__name__} (" + "; ".join(parts) + "). "
            "Build the model with the same architecture and arguments as when it was saved"
        )
    model.load_state_dict(state_dict)


def _listing(items: list[str], limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more" if len(items) > limit else "")

