"""Live inspector: a local web page to draw on and augment an image and watch feature maps and outputs change.

From a terminal: ``dawnet inspect CHECKPOINT [--data DIR] [--image IMG]`` prints the URL. In Jupyter::

    from dawnet import inspector
    handle = inspector.show(agent, data="data/lines/val")   # or a checkpoint path; embeds the page
    handle.url, handle.stop()

The page shows the image the model reads; you draw and erase with the mouse, pick data set samples, upload
an image, cut a region from another image and paste it, and move augmentation sliders. Each change re-runs
the model and shows the chosen layer's feature maps, the output (text with per-character confidence, top-k
classes, or boxes) and each channel's change against the original image. Clicking a map cell outlines its
receptive field; a channel's top-k data set patches are one click away. Everything runs through
:mod:`dawnet.diagnose`.

Needs the ``inspect`` extra (``pip install dawnet[inspect]``: starlette, uvicorn).
"""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

__all__ = ["show", "open_session", "InspectorHandle"]


def open_session(
    agent_or_checkpoint: Any,
    data: str | Path | None = None,
    image: Any = None,
    layer: str | None = None,
    *,
    device: str = "cpu",
    split: str | None = None,
    max_samples: int = 5000,
    trust_code: bool = False,
    **kwargs: Any,
):
    """A :class:`~dawnet.inspector.session.Session` for an agent or a checkpoint (loaded onto ``device``)."""
    from dawnet.agent import Agent
    from dawnet.inspector.session import Session, open_samples

    if isinstance(agent_or_checkpoint, (str, Path)):
        import dawnet.ocr.agents  # noqa: F401  (registers the recognizer agents and models for Agent.load)
        import dawnet.ocr.models  # noqa: F401

        path = Path(agent_or_checkpoint)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint {path} does not exist; give a file written by Agent.save")
        agent = Agent.load(path, map_location=device, trust_code=trust_code)
        name = path.name
    elif isinstance(agent_or_checkpoint, Agent):
        agent, name = agent_or_checkpoint, type(agent_or_checkpoint.model).__name__
    else:
        raise TypeError(f"give a dawnet.Agent or a checkpoint path, got {type(agent_or_checkpoint).__name__}")
    recognizer = hasattr(agent, "charset")
    samples = open_samples(data, recognizer, limit=max_samples, split=split) if data is not None else []
    return Session(agent, samples, image=image, layer=layer, name=name, **kwargs)


class InspectorHandle:
    """A running inspector: ``url``, ``stop()``; shows itself as an embedded page in Jupyter."""

    def __init__(self, server, width: str = "100%", height: int = 820):
        self.server, self.width, self.height = server, width, height

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def session(self):
        return self.server.session

    def stop(self) -> None:
        self.server.stop()

    def _repr_html_(self) -> str:
        url = html.escape(self.url, quote=True)
        return (
            f'<iframe src="{url}" width="{html.escape(str(self.width))}" height="{int(self.height)}" '
            f'style="border:1px solid #ccc" title="dawnet inspector"></iframe>'
            f'<div><a href="{url}" target="_blank" rel="noopener">open the inspector in a new tab</a></div>'
        )

    def __repr__(self) -> str:
        return f"InspectorHandle(url={self.url!r})"


def show(
    agent_or_checkpoint: Any,
    data: str | Path | None = None,
    image: Any = None,
    layer: str | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    width: str = "100%",
    height: int = 820,
    **kwargs: Any,
) -> InspectorHandle:
    """Run the inspector in a background thread and return a handle that Jupyter displays as the page.

    Args:
        agent_or_checkpoint: a :class:`dawnet.Agent` (its model is used as it is, in eval mode during each
            update, its mode restored) or a checkpoint path.
        data: a folder of line data or images to pick samples from and rank top-k patches over.
        image: the first image (a path or a PIL image).
        layer: the layer to show first.
        host, port, token: where to serve; an address other than loopback gets a generated token.
        kwargs: passed to :func:`open_session` (``device``, ``split``, ``max_pixels``, ``trust_code``...).
    """
    from dawnet.inspector.server import InspectorServer

    session = open_session(agent_or_checkpoint, data, image, layer, **kwargs)
    server = InspectorServer(session, host=host, port=port, token=token, data_root=data)
    handle = InspectorHandle(server.start(), width=width, height=height)
    try:  # display at once when called as a statement that is not the last of a cell
        from IPython import get_ipython

        if get_ipython() is not None:
            from IPython.display import HTML, display

            display(HTML(handle._repr_html_()))
            handle._repr_html_ = lambda: None  # type: ignore[method-assign]  (shown once; the repr is the URL)
    except ImportError:
        pass
    return handle
