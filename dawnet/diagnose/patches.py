"""Top-k activating patches: one pass over a data set that keeps, per channel, the k strongest
activations and the input patches under their receptive fields."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from dawnet.diagnose.forward import Forward, eval_mode, param_like, run_forward
from dawnet.diagnose.layout import canonical, feature_layout
from dawnet.diagnose.probe import probe, resolve_layers
from dawnet.diagnose.receptive_field import ReceptiveField, receptive_field

__all__ = ["TopPatches", "top_patches"]


def _default_inputs(batch: Any) -> torch.Tensor:
    if isinstance(batch, torch.Tensor):
        return batch
    if isinstance(batch, dict):
        for key in ("image", "images", "input", "inputs", "x"):
            if key in batch:
                return batch[key]
        raise TypeError(f"batch dict has no image key (tried image/images/input/inputs/x): {list(batch)}; "
                        f"pass inputs=lambda batch: ... to pick the model input")
    if isinstance(batch, (tuple, list)) and batch and isinstance(batch[0], torch.Tensor):
        return batch[0]
    raise TypeError(f"cannot find the model input in a batch of type {type(batch).__name__}; "
                    f"pass inputs=lambda batch: ... to pick it")


@dataclass
class TopPatches:
    """The k strongest activations of each channel over a data set, with their input patches.

    ``values[i, j]`` is the j-th strongest activation of ``channels[i]`` (descending),
    ``image_index[i, j]`` the index of its image in the stream, ``positions[i][j]`` its feature
    position, ``boxes[i][j]`` its input box ``(y0, x0, y1, x1)`` and ``patches[i][j]`` the crop.
    """

    layer: str
    channels: list[int]
    values: torch.Tensor
    image_index: torch.Tensor
    positions: list[list[tuple[int, ...]]]
    boxes: list[list[tuple[int, ...]]]
    patches: list[list[torch.Tensor | None]]
    rf: ReceptiveField
    images_seen: int = 0

    def figure(self, channels: Sequence[int] | None = None, **kwargs: Any):
        """A grid: one row per channel, its top patches left to right (see ``vis.patch_grid``)."""
        from dawnet.diagnose.vis import patch_grid

        return patch_grid(self, channels=channels, **kwargs)

    def _repr_png_(self):  # inline display in Jupyter
        from dawnet.diagnose.vis import figure_png

        return figure_png(self.figure())


def top_patches(model: nn.Module, layer: str, data: Iterable[Any], channels: Sequence[int] | None = None,
                k: int = 9, *, rf: ReceptiveField | None = None, inputs: Callable[[Any], torch.Tensor] | None = None,
                forward: Forward | None = None, layout: str | None = None, distinct: bool = True,
                effective: bool = True, progress: bool = True, max_batches: int | None = None) -> TopPatches:
    """Stream ``data`` once and keep the ``k`` strongest activations of every requested channel.

    ``data`` is a DataLoader or any iterable of batches (``inputs`` picks the image tensor from a
    batch; default: the tensor itself, the first item of a tuple, or the ``image(s)`` key); a
    Dataset of single ``(C, H, W)`` images works too, one image at a time.

    Memory is bounded by ``len(channels) * k`` patches whatever the data set size. For each kept
    activation the input patch under its receptive field is cropped (``rf`` defaults to
    :func:`receptive_field` on the first batch's shape). ``distinct=True`` keeps at most one
    activation per image and channel (each image's peak); ``False`` ranks every position.

    It works on conv maps and on sequences: for a BiLSTM layer (``layout`` ``NTC``/``TNC``) the
    channels are the units and the patch is the input window under the time step; with
    ``layer="output"`` on an ``(N, T, C)`` recognizer, channel c is character class c's logit.
    Where a field spans the whole width (recurrence), ``effective=True`` crops the effective
    field (90% of gradient mass) instead of the whole line.
    """
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    target = resolve_layers(model, layer)[layer]
    device, dtype = param_like(model)
    pick = inputs or _default_inputs
    best_v = best_i = best_p = None
    crops: dict[tuple[int, int], tuple[torch.Tensor, tuple[int, ...]]] = {}
    seen = 0
    chans: list[int] | None = list(channels) if channels is not None else None
    it = tqdm(data, desc=f"top patches {layer}", disable=not progress, leave=False)
    with eval_mode(model), torch.no_grad(), probe(model, layer) as p:
        for b, batch in enumerate(it):
            if max_batches is not None and b >= max_batches:
                break
            x = pick(batch)
            if not isinstance(x, torch.Tensor):
                raise TypeError(f"the model input must be a tensor, got {type(x).__name__}")
            if x.dim() == 3:  # a Dataset yields single (C, H, W) images: batch them one by one
                x = x[None]
            x = x.to(device=device, dtype=dtype if x.is_floating_point() else None)
            if rf is None:
                with torch.enable_grad():
                    rf = receptive_field(model, layer, tuple(x.shape[1:]), forward=forward, layout=layout)
            run_forward(model, x, forward)
            f = canonical(p[layer], feature_layout(target, p[layer], layout))
            if chans is None:
                chans = list(range(f.shape[1]))
            bad = [c for c in chans if not 0 <= c < f.shape[1]]
            if bad:
                raise ValueError(f"channels {bad} out of range: layer {layer!r} has {f.shape[1]} channels")
            n = f.shape[0]
            flat = f[:, chans].reshape(n, len(chans), -1).float()  # (N, C, S)
            if distinct:
                v, pos = flat.max(dim=2)  # (N, C)
                cand_v, cand_i, cand_p = v.T, torch.arange(n).expand(len(chans), n) + seen, pos.T
            else:
                s = flat.shape[2]
                allv = flat.permute(1, 0, 2).reshape(len(chans), n * s)
                kk = min(k, allv.shape[1])
                cand_v, idx = allv.topk(kk, dim=1)
                cand_i, cand_p = idx // s + seen, idx % s
            cand_v, cand_i, cand_p = cand_v.cpu(), cand_i.cpu(), cand_p.cpu()
            if best_v is not None:
                cand_v = torch.cat([best_v, cand_v], 1)
                cand_i = torch.cat([best_i, cand_i], 1)
                cand_p = torch.cat([best_p, cand_p], 1)
            kk = min(k, cand_v.shape[1])
            best_v, order = cand_v.topk(kk, dim=1)
            best_i, best_p = cand_i.gather(1, order), cand_p.gather(1, order)
            feat_shape = tuple(f.shape[2:])
            keep = set()
            for ci in range(len(chans)):
                for j in range(kk):
                    img, flat_pos = int(best_i[ci, j]), int(best_p[ci, j])
                    keep.add((img, flat_pos))
                    if seen <= img < seen + n and (img, flat_pos) not in crops:
                        pos = tuple(int(v) for v in _unravel(flat_pos, feat_shape))
                        box = rf.box(*pos, effective=effective) if feat_shape else rf.box(effective=effective)
                        crops[(img, flat_pos)] = (_crop(x[img - seen], box).cpu(), box)
            crops = {key: val for key, val in crops.items() if key in keep}  # memory bound
            seen += n
    if best_v is None:
        raise ValueError("the data yielded no batch: nothing to rank")
    positions, boxes, patches = [], [], []
    for ci in range(len(chans)):
        row_p, row_b, row_c = [], [], []
        for j in range(best_v.shape[1]):
            key = (int(best_i[ci, j]), int(best_p[ci, j]))
            crop, box = crops[key]
            row_p.append(tuple(int(v) for v in _unravel(key[1], feat_shape)))
            row_b.append(box)
            row_c.append(crop)
        positions.append(row_p)
        boxes.append(row_b)
        patches.append(row_c)
    return TopPatches(layer=layer, channels=chans, values=best_v, image_index=best_i, positions=positions,
                      boxes=boxes, patches=patches, rf=rf, images_seen=seen)


def _unravel(flat: int, shape: tuple[int, ...]) -> tuple[int, ...]:
    out = []
    for n in reversed(shape):
        out.append(flat % n)
        flat //= n
    return tuple(reversed(out))


def _crop(img: torch.Tensor, box: tuple[int, ...]) -> torch.Tensor:
    half = len(box) // 2
    idx = tuple(slice(box[i], box[half + i]) for i in range(half))
    return img[(slice(None), *idx)].detach().clone()

