"""Ensembles of models or checkpoints (e.g. the snapshots of one cyclical run: Huang et al. 2017).

:func:`batch_infer` runs a list of models or checkpoint paths over some data, one model at a time, so memory
stays at about one model however many snapshots there are; it averages the class probabilities
(``reduce="mean"``) or counts each model's vote (``reduce="vote"``) and returns the predicted classes.
:class:`Ensemble` is an ``nn.Module`` holding all the models for repeated use.

Outputs are class scores (logits) with the classes on ``class_dim`` (default: the last dimension), which
covers classifiers ``(N, C)`` and per-frame recognizers such as CTC ``(T, N, C)`` (pass ``batch_dim=1``).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["batch_infer", "Ensemble", "load_model"]

_REDUCTIONS = ("mean", "vote")


def load_model(source, model: Callable[[], nn.Module] | nn.Module | None = None, map_location="cpu",
               trust_code: bool = False) -> nn.Module:
    """An ``nn.Module`` from a module, an Agent (its ``.model``) or a dawnet checkpoint path.

    A checkpoint rebuilds its model from the registry spec it stores; for a model that was not registered
    pass ``model=`` (a module to load the weights into, or a function that builds one).
    """
    if isinstance(source, nn.Module):
        return source
    if isinstance(getattr(source, "model", None), nn.Module):
        return source.model
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"an ensemble member must be an nn.Module, an Agent or a checkpoint path, "
                        f"got {type(source).__name__}")
    from dawnet.checkpoint import CheckpointError, load_checkpoint, load_model_weights
    from dawnet.registry import build_model

    state = load_checkpoint(source, map_location=map_location)
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"{source} is not a dawnet checkpoint (no 'model' entry); save it with Agent.save")
    if model is None:
        spec = state["model"].get("spec")
        if spec is None:
            raise CheckpointError(
                f"checkpoint {source} cannot rebuild its model ({state['model'].get('class')} was not built by a "
                "registered constructor): pass model= (a function that builds the architecture)"
            )
        net = build_model(spec, trust_code=trust_code)
    else:
        net = model() if not isinstance(model, nn.Module) else model
    load_model_weights(net, state["model"]["state_dict"], source=str(source))
    return net


@torch.no_grad()
def batch_infer(models_or_checkpoint_paths: Sequence, x, reduce: str = "mean", batch_size: int = 256,
                device: str | torch.device | None = None, model: Callable[[], nn.Module] | None = None,
                class_dim: int = -1, batch_dim: int = 0, return_scores: bool = False, trust_code: bool = False,
                progress: bool = False):
    """Predicted classes of an ensemble, loading the members one at a time.

    Args:
        models_or_checkpoint_paths: modules, Agents or checkpoint paths (e.g. ``SnapshotAtMinimum(...).paths``).
        x: a tensor of model inputs (split into ``batch_size`` chunks along ``batch_dim``), or a re-iterable
            of batches (a DataLoader or a list); a batch that is a tuple/list is read as ``(inputs, ...)``.
        reduce: ``"mean"`` averages the softmax probabilities; ``"vote"`` counts each member's argmax
            (ties go to the class with the higher mean probability).
        batch_size: inference batch size when ``x`` is a tensor.
        device: where to run (default: CUDA when available, else CPU). Members go back to the CPU afterwards.
        model: builds the architecture for checkpoints whose model was not registered.
        class_dim: the classes' dimension of the outputs (default -1).
        batch_dim: the batch dimension of inputs and outputs (default 0; 1 for CTC's (T, N, C)).
        return_scores: also return the averaged probabilities (mean) or vote shares (vote).
        trust_code: allow checkpoints to import model code outside dawnet and torch.
        progress: a tqdm bar over the members.

    Returns:
        The predicted class indices (outputs with ``class_dim`` reduced), or ``(predictions, scores)``.
    """
    if reduce not in _REDUCTIONS:
        raise ValueError(f"reduce must be one of {_REDUCTIONS}, got {reduce!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    members = list(models_or_checkpoint_paths)
    if not members:
        raise ValueError("the ensemble is empty: pass at least one model or checkpoint path")
    missing = [str(m) for m in members if isinstance(m, (str, os.PathLike)) and not Path(m).exists()]
    if missing:
        raise FileNotFoundError(f"checkpoints not found: {missing}")
    batches = _batches(x, batch_size, batch_dim)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available()
                                                                           else "cpu")
    total = None
    iterator = members
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(members, desc="ensemble", unit="model", leave=False)
    for source in iterator:
        net = load_model(source, model=model, trust_code=trust_code)
        outputs = _run(net, batches, device, batch_dim)
        share = _member_scores(outputs, reduce, class_dim)
        total = share if total is None else total.add_(share)
        if isinstance(source, (str, os.PathLike)):  # free it before the next one loads
            del net
            gc.collect()
    scores = total / len(members)
    if reduce == "vote":
        return _finish_vote(scores, members, batches, model, device, batch_dim, class_dim, return_scores,
                            trust_code)
    predictions = scores.argmax(dim=class_dim)
    return (predictions, scores) if return_scores else predictions


def _finish_vote(votes, members, batches, model, device, batch_dim, class_dim, return_scores, trust_code):
    # Ties between vote counts go to the class with the higher mean probability; computing it needs a
    # second pass only when some element is tied.
    top2 = votes.topk(min(2, votes.shape[class_dim]), dim=class_dim).values
    tied = top2.shape[class_dim] > 1 and bool((top2.select(class_dim, 0) == top2.select(class_dim, 1)).any())
    decider = votes
    if tied:
        mean = None
        for source in members:
            net = load_model(source, model=model, trust_code=trust_code)
            probs = _member_scores(_run(net, batches, device, batch_dim), "mean", class_dim)
            mean = probs if mean is None else mean.add_(probs)
        decider = votes + 0.5 * mean / len(members) / len(members)  # < half a vote: only breaks ties
    predictions = decider.argmax(dim=class_dim)
    return (predictions, votes) if return_scores else predictions


def _batches(x, batch_size: int, batch_dim: int) -> list | Iterable:
    if isinstance(x, torch.Tensor):
        if x.dim() == 0:
            raise ValueError("x must have a batch dimension; got a 0-d tensor")
        return list(torch.split(x, batch_size, dim=batch_dim))
    if iter(x) is x:
        raise ValueError("x is a one-shot iterator, but every ensemble member reads it again: pass a tensor, a "
                         "list of batches or a DataLoader")
    return x


def _run(net: nn.Module, batches, device: torch.device, batch_dim: int) -> torch.Tensor:
    was_training = net.training
    home = next((p.device for p in net.parameters()), torch.device("cpu"))
    net.to(device).eval()
    try:
        outs = []
        for batch in batches:
            inputs = batch[0] if isinstance(batch, (tuple, list)) else batch
            out = net(inputs.to(device))
            if not isinstance(out, torch.Tensor):
                raise TypeError(f"ensembles need models that return one tensor of class scores, got "
                                f"{type(out).__name__}")
            outs.append(out.float().cpu())
        if not outs:
            raise ValueError("x holds no batches")
        return torch.cat(outs, dim=batch_dim)
    finally:
        net.train(was_training)
        net.to(home)


def _member_scores(outputs: torch.Tensor, reduce: str, class_dim: int) -> torch.Tensor:
    if reduce == "mean":
        return outputs.softmax(dim=class_dim)
    labels = outputs.argmax(dim=class_dim, keepdim=True)
    return torch.zeros_like(outputs).scatter_(class_dim % outputs.dim(), labels, 1.0)


class Ensemble(nn.Module):
    """An ``nn.Module`` that averages its members' probabilities (or votes) for repeated use.

    ``forward(x)`` returns the averaged class probabilities (``reduce="mean"``) or vote shares
    (``reduce="vote"``) with the classes on ``class_dim``; :meth:`predict` returns the argmax. All members
    stay in memory (use :func:`batch_infer` to stream many checkpoints through one model's worth of memory).

    Example:
        >>> ens = Ensemble.from_checkpoints(snapshots.paths)
        >>> ens.predict(images)          # class indices
    """

    def __init__(self, models: Sequence[nn.Module], reduce: str = "mean", class_dim: int = -1):
        super().__init__()
        if reduce not in _REDUCTIONS:
            raise ValueError(f"reduce must be one of {_REDUCTIONS}, got {reduce!r}")
        models = [load_model(m) for m in models]
        if not models:
            raise ValueError("the ensemble is empty: pass at least one model")
        self.members = nn.ModuleList(models)
        self.reduce = reduce
        self.class_dim = class_dim

    @classmethod
    def from_checkpoints(cls, paths: Iterable, model: Callable[[], nn.Module] | None = None, reduce: str = "mean",
                         class_dim: int = -1, trust_code: bool = False) -> Ensemble:
        """Load every checkpoint (``model`` builds unregistered architectures) into one Ensemble."""
        return cls([load_model(p, model=model, trust_code=trust_code) for p in paths], reduce, class_dim)

    def forward(self, *inputs) -> torch.Tensor:
        total = None
        for member in self.members:
            share = _member_scores(member(*inputs), self.reduce, self.class_dim)
            total = share if total is None else total + share
        return total / len(self.members)

    @torch.no_grad()
    def predict(self, *inputs) -> torch.Tensor:
        """Predicted classes (eval mode for the call; the previous mode is restored)."""
        was_training = self.training
        self.eval()
        try:
            scores = self(*inputs)
            if self.reduce == "vote":
                mean = sum(m(*inputs).softmax(self.class_dim) for m in self.members) / len(self.members)
                scores = scores + 0.5 * mean / len(self.members)
            return scores.argmax(dim=self.class_dim)
        finally:
            self.train(was_training)
