"""Handwriting OCR: charset, data, recognizers, language model, decoding, metrics, benchmark protocol."""


def __getattr__(name: str):
    # read_page pulls in the detector and recognizers: imported only when asked for
    if name == "read_page":
        from dawnet.ocr.page import read_page

        return read_page
    raise AttributeError(f"module 'dawnet.ocr' has no attribute {name!r}")
