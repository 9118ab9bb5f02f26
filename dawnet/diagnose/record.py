"""Record feature maps of a fixed probe set during training, and watch them evolve.

:class:`FeatureRecorder` is a training callback: every ``every`` optimizer steps (and at the
start, so random initialization is frame 0, and at the end) it runs the model on the same
probe images and appends the chosen layers' maps, as float16, to one compact file. Memory
holds one snapshot at a time; the file stays under ``max_bytes`` by dropping every other
snapshot and doubling the interval when it would overflow, so the recording always spans the
whole run. :class:`Recording` reads the file; :func:`plot_evolution` and :func:`animate`
(GIF with Pillow, MP4 when ffmpeg is on PATH) show it.

File layout: ``b"DAWNREC1"``, then records of ``<u8 header length><JSON header><payload>``;
the first record describes the layers and holds the probe images, each later one is a step's
maps concatenated (float16, C order). A truncated last record (a crash mid-write) is ignored.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import struct
import subprocess
import tempfile
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from torch import nn

from dawnet.atomic import atomic_path, atomic_write
from dawnet.callbacks import Callback
from dawnet.diagnose.forward import eval_mode, run_forward
from dawnet.diagnose.layout import canonical, feature_layout
from dawnet.diagnose.probe import probe, resolve_layers, unwrap

__all__ = ["FeatureRecorder", "Recording", "plot_evolution", "animate"]

MAGIC = b"DAWNREC1"
_LEN = struct.Struct("<Q")


def _write_record(f, header: dict, payload: bytes = b"") -> int:
    head = json.dumps({**header, "nbytes": len(payload)}).encode()
    f.write(_LEN.pack(len(head)))
    f.write(head)
    f.write(payload)
    return _LEN.size + len(head) + len(payload)


def _is_main_process() -> bool:
    try:
        from dawnet import parallel

        return parallel.is_main_process()
    except ImportError:  # pragma: no cover - parallel ships with the Agent
        return True


class FeatureRecorder(Callback):
    """Record ``layers``' feature maps on ``inputs`` every ``every`` steps into ``path``.

    Args:
        path: the recording file (created; an existing one is continued when resuming).
        inputs: the fixed probe batch ``(P, C, H, W)`` (a few images: memory is P x maps).
        layers: dotted layer names.
        every: record after every ``every`` optimizer steps.
        channels: optional {layer: [channel, ...]} to keep only some channels.
        max_bytes: upper bound of the file size (default 256 MiB).
        forward: ``(model, x) -> output`` for models that need more than ``model(x)``.
        overwrite: start a new file even if ``path`` holds a longer recording.

    Example::

        rec = FeatureRecorder("run/features.rec", probe_images, ["cnn.conv1", "cnn.conv4"], every=20)
        agent = Agent(model, opt, loss, callbacks=[rec]); agent.fit(train, epochs=5)
        animate(Recording("run/features.rec"), "cnn.conv4", "conv4.gif")
    """

    def __init__(self, path: str | os.PathLike, inputs: torch.Tensor, layers: str | Sequence[str], every: int = 50,
                 *, channels: dict[str, Sequence[int]] | None = None, max_bytes: int = 256 * 2**20,
                 forward: Callable | None = None, layouts: dict[str, str] | None = None, overwrite: bool = False):
        if not isinstance(inputs, torch.Tensor) or inputs.dim() < 3:
            raise ValueError("inputs must be a probe batch tensor (P, C, H, W); take a few images from the data")
        if every < 1:
            raise ValueError(f"every must be a positive number of steps, got {every}")
        self.path = Path(path)
        self.inputs = inputs.detach().cpu()
        self.layers = [layers] if isinstance(layers, str) else list(layers)
        if not self.layers:
            raise ValueError("give at least one layer name to record")
        self.every = int(every)
        self.channels = {k: [int(c) for c in v] for k, v in (channels or {}).items()}
        self.max_bytes = int(max_bytes)
        self.forward = forward
        self.layouts = layouts or {}
        self.overwrite = overwrite
        self.last_step: int | None = None
        self._meta: dict | None = None

    # -- callback hooks -------------------------------------------------------------------------
    def on_fit_start(self, agent) -> None:
        if not _is_main_process():
            return
        if self.path.exists() and not self.overwrite:
            rec = Recording(self.path)
            if rec.steps and self.last_step is None and rec.steps[-1] > agent.step:
                raise FileExistsError(
                    f"{self.path} already records steps up to {rec.steps[-1]}, but training starts at step "
                    f"{agent.step}: pass overwrite=True to replace it, or a new path"
                )
            self.last_step = rec.steps[-1] if rec.steps else None
            self._meta = rec.meta
        elif self.overwrite and self.path.exists() and self.last_step is None:
            self.path.unlink()
        self.record(agent.model, agent.step, device=agent.device)

    def on_step_end(self, agent, logs: dict) -> None:
        step = int(logs.get("step", agent.step)) if isinstance(logs, dict) else agent.step
        if step % self.every == 0 and _is_main_process():
            self.record(agent.model, step, device=agent.device)

    def on_fit_end(self, agent) -> None:
        if _is_main_process():
            self.record(agent.model, agent.step, device=agent.device, force=True)

    def state_dict(self) -> dict:
        return {"every": self.every, "last_step": self.last_step, "path": str(self.path)}

    def load_state_dict(self, state: dict) -> None:
        self.every = int(state["every"])
        self.last_step = state["last_step"]

    # -- recording ------------------------------------------------------------------------------
    def snapshot(self, model: nn.Module, device: torch.device | str | None = None) -> dict[str, np.ndarray]:
        """The recorded layers' maps on the probe inputs, float16 ``(P, C, *spatial)`` (no file I/O)."""
        model = unwrap(model)
        modules = resolve_layers(model, self.layers)
        if device is None:
            p = next(model.parameters(), None)
            device = p.device if p is not None else "cpu"
        out = {}
        with eval_mode(model), torch.no_grad(), probe(model, self.layers) as pr:
            run_forward(model, self.inputs.to(device), self.forward)
            for name in self.layers:
                t = pr[name]
                f = canonical(t, feature_layout(modules[name], t, self.layouts.get(name)))
                if name in self.channels:
                    f = f[:, self.channels[name]]
                out[name] = f.detach().float().cpu().numpy().astype(np.float16)
        return out

    def record(self, model: nn.Module, step: int, device: torch.device | str | None = None, force: bool = False
               ) -> bool:
        """Append one snapshot at ``step`` (skipped if that step is already recorded).

        After the file was thinned, steps off the coarser grid are skipped unless ``force``.
        """
        if self.last_step is not None and step <= self.last_step:
            return False
        maps = self.snapshot(model, device)
        payload = b"".join(np.ascontiguousarray(maps[n]).tobytes() for n in self.layers)
        if self._meta is None:
            self._meta = {"kind": "meta", "version": 1, "layers": self.layers,
                          "shapes": {n: list(maps[n].shape) for n in self.layers},
                          "channels": {n: self.channels.get(n) for n in self.layers},
                          "inputs_shape": list(self.inputs.shape), "every": self.every}
            with atomic_write(self.path) as f:
                f.write(MAGIC)
                _write_record(f, self._meta, self.inputs.float().numpy().astype(np.float16).tobytes())
        else:
            shapes = {n: list(maps[n].shape) for n in self.layers}
            if shapes != self._meta["shapes"]:
                raise ValueError(f"{self.path} records shapes {self._meta['shapes']}, this model gives {shapes}; "
                                 f"use a new path for a different model or probe set")
        size = self.path.stat().st_size
        record_size = _LEN.size + 64 + len(payload)  # 64: a snapshot's JSON header, generously
        if size + record_size > self.max_bytes:
            self._thin()
            if self.path.stat().st_size + record_size > self.max_bytes:
                warnings.warn(f"{self.path} cannot hold another snapshot under max_bytes={self.max_bytes}; "
                              f"recording stops (raise max_bytes or record fewer layers/channels)", stacklevel=2)
                self.last_step = step
                return False
            if step % self.every and self.last_step is not None and not force:  # off the new, coarser grid
                self.last_step = step
                return False
        with open(self.path, "ab") as f:
            _write_record(f, {"kind": "snapshot", "step": int(step)}, payload)
            f.flush()
        self.last_step = step
        return True

    def _thin(self) -> None:
        """Drop every other snapshot (keeping the first and last) and double ``every``."""
        rec = Recording(self.path)
        keep = set(range(0, len(rec.steps), 2)) | {len(rec.steps) - 1}
        with open(self.path, "rb") as src, atomic_write(self.path) as f:
            f.write(MAGIC)
            _write_record(f, {**rec.meta, "every": self.every * 2}, rec._payload(src, rec._meta_at))
            for i, (step, off) in enumerate(zip(rec.steps, rec._offsets)):
                if i in keep:
                    _write_record(f, {"kind": "snapshot", "step": step}, rec._payload(src, off))
        self.every *= 2
        if self._meta is not None:
            self._meta["every"] = self.every


class Recording:
    """Read a :class:`FeatureRecorder` file: ``steps``, ``layers``, ``inputs`` and maps by step."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"no recording at {self.path}")
        self.steps: list[int] = []
        self._offsets: list[tuple[int, int]] = []
        with open(self.path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise ValueError(f"{self.path} is not a dawnet feature recording (bad magic bytes)")
            end = self.path.stat().st_size
            meta = None
            while f.tell() < end:
                start = f.tell()
                raw = f.read(_LEN.size)
                if len(raw) < _LEN.size:
                    break
                (n,) = _LEN.unpack(raw)
                head_raw = f.read(n)
                try:
                    head = json.loads(head_raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    warnings.warn(f"{self.path}: corrupt record at byte {start}; reading what came before",
                                  stacklevel=2)
                    break
                pos = f.tell()
                if pos + head["nbytes"] > end:
                    warnings.warn(f"{self.path}: the last record is truncated (interrupted write); ignored",
                                  stacklevel=2)
                    break
                f.seek(pos + head["nbytes"])
                if head.get("kind") == "meta":
                    meta, self._meta_at = head, (pos, head["nbytes"])
                else:
                    self.steps.append(int(head["step"]))
                    self._offsets.append((pos, head["nbytes"]))
        if meta is None:
            raise ValueError(f"{self.path} has no header record")
        self.meta = meta
        self.layers: list[str] = list(meta["layers"])
        self.shapes = {n: tuple(s) for n, s in meta["shapes"].items()}

    @staticmethod
    def _payload(f, where: tuple[int, int]) -> bytes:
        f.seek(where[0])
        return f.read(where[1])

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def inputs(self) -> np.ndarray:
        """The probe images, float16 ``(P, C, H, W)``."""
        with open(self.path, "rb") as f:
            return np.frombuffer(self._payload(f, self._meta_at), dtype=np.float16).reshape(self.meta["inputs_shape"])

    def _check_layer(self, layer: str) -> None:
        if layer not in self.shapes:
            raise KeyError(f"{layer!r} is not recorded in {self.path}; recorded layers: {self.layers}")

    def snapshot(self, index: int) -> dict[str, np.ndarray]:
        """All layers' maps at snapshot ``index`` (float16 ``(P, C, *spatial)``)."""
        pos, _ = self._offsets[index]
        out = {}
        with open(self.path, "rb") as f:
            f.seek(pos)
            for n in self.layers:
                count = int(np.prod(self.shapes[n]))
                out[n] = np.frombuffer(f.read(count * 2), dtype=np.float16).reshape(self.shapes[n])
        return out

    def evolution(self, layer: str, image: int = 0, channel: int | None = None) -> np.ndarray:
        """One image's maps of ``layer`` over all snapshots: ``(S, C, *spatial)`` or, with
        ``channel`` (index among the recorded channels), ``(S, *spatial)``. Reads only that layer."""
        self._check_layer(layer)
        shape = self.shapes[layer]
        per_image = int(np.prod(shape[1:]))
        before = sum(int(np.prod(self.shapes[n])) for n in self.layers[:self.layers.index(layer)])
        frames = []
        with open(self.path, "rb") as f:
            for pos, _ in self._offsets:
                f.seek(pos + 2 * (before + image * per_image))
                a = np.frombuffer(f.read(2 * per_image), dtype=np.float16).reshape(shape[1:])
                frames.append(a if channel is None else a[channel])
        return np.stack(frames) if frames else np.zeros((0, *shape[1:]), np.float16)

    def channel_ids(self, layer: str) -> list[int]:
        """The model channel index of each recorded channel of ``layer``."""
        self._check_layer(layer)
        chosen = self.meta["channels"].get(layer)
        return list(chosen) if chosen else list(range(self.shapes[layer][1]))


def plot_evolution(rec: Recording, layer: str, channel: int = 0, image: int = 0, *, frames: int = 8,
                   shared_scale: bool = False, cmap: str = "viridis") -> Figure:
    """A channel's map at ``frames`` evenly spaced snapshots (from initialization to the last),
    above the channel's mean and spread over all recorded steps."""
    ids = rec.channel_ids(layer)
    if channel not in ids:
        raise ValueError(f"channel {channel} of {layer!r} is not recorded; recorded: {ids}")
    ev = rec.evolution(layer, image, ids.index(channel)).astype(np.float32)  # (S, *spatial)
    if len(ev) == 0:
        raise ValueError(f"{rec.path} holds no snapshot yet")
    picks = sorted(set(np.linspace(0, len(ev) - 1, min(frames, len(ev))).round().astype(int).tolist()))
    fig = Figure(figsize=(2.2 * len(picks) + 1, 4.6), layout="constrained")
    gs = fig.add_gridspec(2, len(picks), height_ratios=[1.3, 1])
    lo, hi = (float(ev.min()), float(ev.max())) if shared_scale else (None, None)
    for j, i in enumerate(picks):
        ax = fig.add_subplot(gs[0, j])
        m = ev[i] if ev[i].ndim == 2 else ev[i][None]
        ax.imshow(m, cmap=cmap, vmin=lo, vmax=hi, interpolation="nearest", aspect="auto" if ev[i].ndim < 2 else
                  "equal")
        ax.set_title(f"step {rec.steps[i]}", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
    ax = fig.add_subplot(gs[1, :])
    flat = ev.reshape(len(ev), -1)
    mean, std = flat.mean(1), flat.std(1)
    ax.plot(rec.steps, mean, label="mean")
    ax.fill_between(rec.steps, mean - std, mean + std, alpha=0.3, label="+- std")
    ax.plot(rec.steps, flat.max(1), lw=0.8, ls="--", label="max")
    ax.set_xlabel("step")
    ax.legend(fontsize=7)
    fig.suptitle(f"{layer} channel {channel}, image {image}", fontsize=10)
    return fig


def _colorize(a: np.ndarray, cmap: str, lo: float, hi: float) -> np.ndarray:
    from matplotlib import colormaps

    z = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
    return (colormaps[cmap](np.clip(z, 0, 1))[..., :3] * 255).astype(np.uint8)


def _frame_image(maps: np.ndarray, cmap: str, scale: int, ncols: int) -> np.ndarray:
    """Tile (C, h, w) maps, each normalised on its own, into one RGB image."""
    c = maps.shape[0]
    maps = maps if maps.ndim == 3 else maps[:, None, :]  # sequences: one row per unit
    h, w = maps.shape[1:]
    rows = math.ceil(c / ncols)
    canvas = np.full((rows * (h * scale + 2), ncols * (w * scale + 2), 3), 255, np.uint8)
    for i in range(c):
        m = maps[i].astype(np.float32)
        tile = _colorize(m, cmap, float(m.min()), float(m.max())).repeat(scale, 0).repeat(scale, 1)
        r, q = divmod(i, ncols)
        y0, x0 = r * (h * scale + 2), q * (w * scale + 2)
        canvas[y0:y0 + h * scale, x0:x0 + w * scale] = tile
    return canvas


def animate(rec: Recording, layer: str, path: str | os.PathLike, *, channels: Sequence[int] | None = None,
            image: int = 0, fps: float = 4.0, scale: int = 4, cmap: str = "viridis", max_channels: int = 16) -> Path:
    """Write the evolution of ``layer``'s maps as an animation, one frame per snapshot.

    ``.gif`` is written with Pillow; ``.mp4`` needs ``ffmpeg`` on PATH (H.264, yuv420p). Each
    frame tiles the chosen channels (default the first ``max_channels`` recorded), each map on
    its own colour scale, with the step number drawn on top. The file is written atomically.
    """
    from PIL import Image, ImageDraw

    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".gif", ".mp4"):
        raise ValueError(f"animation path must end in .gif or .mp4, got {path.name!r}")
    ffmpeg = shutil.which("ffmpeg")
    if suffix == ".mp4" and ffmpeg is None:
        raise RuntimeError("writing .mp4 needs ffmpeg on PATH (e.g. `apt install ffmpeg`); write a .gif instead")
    ids = rec.channel_ids(layer)
    chans = list(channels) if channels is not None else ids[:max_channels]
    missing = [c for c in chans if c not in ids]
    if missing:
        raise ValueError(f"channels {missing} of {layer!r} are not recorded; recorded: {ids}")
    ev = rec.evolution(layer, image)[:, [ids.index(c) for c in chans]]  # (S, C', *spatial)
    if len(ev) == 0:
        raise ValueError(f"{rec.path} holds no snapshot yet")
    ncols = max(1, math.ceil(math.sqrt(len(chans))))
    frames = []
    for step, maps in zip(rec.steps, ev):
        tile = _frame_image(maps, cmap, scale, ncols)
        im = Image.new("RGB", (tile.shape[1], tile.shape[0] + 14), "white")
        im.paste(Image.fromarray(tile), (0, 14))
        ImageDraw.Draw(im).text((2, 1), f"{layer}  step {step}", fill=(0, 0, 0))
        frames.append(im)
    with atomic_path(path) as tmp:  # the temporary keeps the suffix (.gif / .mp4) for PIL and ffmpeg
        if suffix == ".gif":
            frames[0].save(tmp, save_all=True, append_images=frames[1:], duration=int(1000 / fps), loop=0)
        else:
            with tempfile.TemporaryDirectory() as d:
                for i, fr in enumerate(frames):
                    w, h = fr.size
                    fr.crop((0, 0, w + w % 2, h + h % 2)).save(os.path.join(d, f"{i:06d}.png"))  # even sizes
                cmd = [ffmpeg, "-y", "-loglevel", "error", "-framerate", str(fps), "-i", os.path.join(d, "%06d.png"),
                       "-c:v", "libx264", "-pix_fmt", "yuv420p", str(tmp)]
                res = subprocess.run(cmd, capture_output=True, text=True)
                if res.returncode != 0:
                    raise RuntimeError(f"ffmpeg failed: {res.stderr.strip()[-500:]}")
    return path

