"""OCR models: the modular line recognizer and its presets (importing this registers them)."""

from dawnet.ocr.models import blocks, recognizer  # noqa: F401  (registers the presets)
from dawnet.ocr.models.recognizer import Recognizer, model_cfgs

__all__ = ["Recognizer", "model_cfgs", "blocks", "recognizer"]
