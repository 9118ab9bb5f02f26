"""dawnet: build, train, measure and understand vision models; handwriting OCR is its home ground."""

__version__ = "0.1.0"

__all__ = ["__version__", "Agent", "ImageInput", "create_model", "list_models", "register_model"]

# Everything is imported on first use, so `import dawnet` (and `dawnet --help`) does not import torch.
_LAZY = {
    "Agent": "dawnet.agent",
    "ImageInput": "dawnet.inputs",
    "create_model": "dawnet.registry",
    "list_models": "dawnet.registry",
    "register_model": "dawnet.registry",
}


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'dawnet' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
