"""OCR models: the modular line recognizer and its presets (importing this registers them)."""

from dawnet.ocr.models import blocks, recognizer, yolo  # noqa: F401  (registers the presets, yolo, yolo_large)
from dawnet.ocr.models.recognizer import Recognizer, model_cfgs

__all__ = ["Recognizer", "model_cfgs", "blocks", "recognizer"]
