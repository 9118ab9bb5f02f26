"""Handwriting OCR: charset, data, recognizers, language model, decoding, metrics, benchmark protocol."""
