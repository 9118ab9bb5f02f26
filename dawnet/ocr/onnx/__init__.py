"""ONNX export and ONNX Runtime inference for dawnet's recognizers and detector (``pip install dawnet[onnx]``).

    from dawnet.ocr.onnx import export_onnx, load
    export_onnx("runs/crnn.pt", "crnn.onnx")                 # + quantize="int8", fp16=True, opset=17
    rec = load("crnn.onnx")                                  # OnnxRecognizer (or OnnxDetector for a detector)
    rec.infer("line.png"); rec.set_decoder(beam=10, lm=lm, lm_weight=0.5, bonus=1.0)
    read_page("page.png", load("yolo.onnx"), rec)            # dawnet.ocr.page works with both unchanged

An exported file describes itself: its metadata (key ``dawnet``, JSON) holds the charset, the input height and
normalization, the decoder kind and defaults, and for a detector the letterbox size, stride and score/NMS
settings. An attention recognizer is two files: the encoder (``X.onnx``, with the metadata) and one decoder step
(``X.decoder.onnx``), so that greedy decoding, beam search and LM fusion all run the same step graph, as in PyTorch.

``export`` needs torch, onnx and onnxruntime (the export is checked against PyTorch before it is kept);
``runtime`` needs onnxruntime (plus dawnet's decoders, which use torch).
"""

from __future__ import annotations

from dawnet.ocr.onnx.meta import FORMAT, VERSION, MissingDependencyError, OnnxFileError, read_metadata, require

__all__ = ["FORMAT", "VERSION", "OnnxFileError", "MissingDependencyError", "read_metadata", "require", "export_onnx",
           "ExportResult", "OnnxRecognizer", "OnnxDetector", "load", "load_recognizer", "load_detector"]

_LAZY = {"export_onnx": "export", "ExportResult": "export", "OnnxRecognizer": "runtime", "OnnxDetector": "runtime",
         "load": "runtime", "load_recognizer": "runtime", "load_detector": "runtime"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"dawnet.ocr.onnx.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'dawnet.ocr.onnx' has no attribute {name!r}")
