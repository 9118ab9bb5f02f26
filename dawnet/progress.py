"""The progress bar ``Agent.fit`` shows: one tqdm bar per epoch with loss, LR, speed and the last validation."""

from __future__ import annotations

import time

from dawnet.history import History

__all__ = ["progress_bar", "show_stats"]


def progress_bar(total: int | None, epoch: int, start: int, show: bool):
    """A tqdm bar for ``epoch`` (0-based) at batch ``start`` of ``total``; None when ``show`` is False."""
    if not show:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=start, desc=f"epoch {epoch + 1}",
                unit="batch", dynamic_ncols=True, leave=True)


def show_stats(bar, stats: dict, history: History) -> None:
    """Put a step's loss and LR, the speed and the last epoch's validation values on ``bar`` (twice a second)."""
    now = time.monotonic()
    if now - getattr(bar, "_dawnet_shown", 0.0) < 0.5:  # formatting the postfix costs; refresh twice a second
        return
    bar._dawnet_shown = now
    post = {"loss": f"{stats['loss']:.4g}", "lr": f"{stats['lr']:.3g}"}
    speed = history.last("samples_per_s")
    if speed:
        post["samples/s"] = f"{speed:.0f}"
    if history.epochs:
        for key, value in history.epochs[-1].items():
            if key.startswith("val_"):
                post[key] = f"{value:.4g}"
    bar.set_postfix(post, refresh=False)
