"""dawnet: build, train, measure and understand vision models; handwriting OCR is its home ground."""

__version__ = "0.1.0"

from dawnet.registry import create_model, list_models, register_model  # noqa: E402

__all__ = ["__version__", "Agent", "ImageInput", "create_model", "list_models", "register_model"]


def __getattr__(name: str):
    # Agent and ImageInput are imported lazily so `import dawnet` (and `dawnet --help`) stays fast.
    if name == "Agent":
        from dawnet.agent import Agent

        return Agent
    if name == "ImageInput":
        from dawnet.inputs import ImageInput

        return ImageInput
    raise AttributeError(f"module 'dawnet' has no attribute {name!r}")
