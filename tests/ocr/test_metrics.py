"""Metrics: CER/WER/accuracies/1-NED with stated normalization; detection mAP via pycocotools."""

import pytest
from rapidfuzz.distance import Levenshtein

from dawnet.ocr.metrics import (
    Normalization,
    cer,
    detection_map,
    line_accuracy,
    one_minus_ned,
    text_metrics,
    wer,
    word_accuracy,
)


def test_cer_is_corpus_level_edits_over_reference_chars():
    refs, hyps = ["abcd", "xy"], ["abd", "xyz"]  # 1 deletion + 1 insertion over 6 chars
    assert cer(refs, hyps) == pytest.approx(2 / 6)
    assert cer(["same"], ["same"]) == 0.0
    assert cer(["ab"], ["abcdef"]) == pytest.approx(2.0)  # can exceed 1, as edit rates do


def test_wer_counts_word_edits():
    assert wer(["the cat sat on the mat"], ["the cat sit on mat"]) == pytest.approx(2 / 6)
    assert word_accuracy(["the cat sat on the mat"], ["the cat sit on mat"]) == pytest.approx(4 / 6)
    assert line_accuracy(["a b", "c"], ["a b", "d"]) == 0.5


def test_one_minus_ned_follows_icdar_2019():
    refs, hyps = ["abcd", "xy", ""], ["abd", "", ""]
    expected = 1 - (1 / 4 + 2 / 2 + 0) / 3
    assert one_minus_ned(refs, hyps) == pytest.approx(expected)
    assert one_minus_ned(["abc"], ["abcdef"]) == pytest.approx(1 - 3 / 6)  # normalized by the longer


def test_normalization_is_selectable_and_stated():
    refs, hyps = ["Hello,  World!"], ["hello world"]
    assert cer(refs, hyps) > 0
    n = Normalization(casefold=True, punctuation="remove", whitespace="collapse")
    assert cer(refs, hyps, n) == 0.0
    assert cer(["a  b"], ["a b"], Normalization(whitespace="keep")) == pytest.approx(1 / 4)
    assert cer(["a  b"], ["a b"]) == 0.0  # default collapses runs of spaces
    assert cer(["a b"], ["ab"], Normalization(whitespace="remove")) == 0.0
    assert cer(["cafe\u0301"], ["caf\u00e9"]) == 0.0  # NFC always
    m = text_metrics(refs, hyps, n)
    assert m["normalization"] == "NFC, case folded, punctuation remove, whitespace collapse"
    with pytest.raises(ValueError, match="punctuation"):
        Normalization(punctuation="strip")


def test_edit_distance_agrees_with_rapidfuzz_on_random_text():
    import random

    rng = random.Random(0)
    refs = ["".join(rng.choice("ab c") for _ in range(rng.randint(1, 20))) for _ in range(50)]
    hyps = ["".join(rng.choice("ab c") for _ in range(rng.randint(0, 20))) for _ in range(50)]
    keep = Normalization(whitespace="keep")
    total = sum(Levenshtein.distance(r, h) for r, h in zip(refs, hyps))
    assert cer(refs, hyps, keep) == pytest.approx(total / sum(map(len, refs)))


def test_bad_inputs():
    with pytest.raises(ValueError, match="pair up"):
        cer(["a"], ["a", "b"])
    with pytest.raises(TypeError, match="lists"):
        cer("abc", "abd")
    with pytest.raises(ValueError, match="undefined"):
        cer([""], ["x"])


GT = [[[10, 10, 110, 40], [10, 60, 210, 90]], [[20, 20, 120, 50]]]


def test_map_perfect_partial_and_empty():
    perfect = [{"boxes": b, "scores": [0.9] * len(b)} for b in GT]
    r = detection_map(GT, perfect)
    assert r["map"] == pytest.approx(1.0) and r["map50"] == pytest.approx(1.0)
    # shifted boxes: IoU about 0.6 -> counted at 0.5 but not at 0.75
    shifted = [{"boxes": [[x0 + 15, y0 + 3, x1 + 15, y1 + 3] for x0, y0, x1, y1 in b], "scores": [0.9] * len(b)}
               for b in GT]
    s = detection_map(GT, shifted)
    assert s["map50"] == pytest.approx(1.0) and s["map75"] == pytest.approx(0.0) and 0 < s["map"] < 0.6
    # one of three lines missed: recall 2/3 caps AP at 0.5 IoU
    missed = [{"boxes": GT[0][:1], "scores": [0.9]}, {"boxes": GT[1], "scores": [0.8]}]
    m = detection_map(GT, missed)
    assert m["map50"] == pytest.approx(0.663, abs=0.01)  # COCO's 101-point interpolation
    none = detection_map(GT, [{"boxes": [], "scores": []}, {"boxes": [], "scores": []}])
    assert none["map"] == 0.0


def test_map_ranks_by_score():
    # a false positive scored above the true one lowers AP; scored below, it does not
    gt = [[[0, 0, 100, 20]]]
    fp_high = [{"boxes": [[300, 300, 400, 320], [0, 0, 100, 20]], "scores": [0.9, 0.5]}]
    fp_low = [{"boxes": [[300, 300, 400, 320], [0, 0, 100, 20]], "scores": [0.1, 0.5]}]
    assert detection_map(gt, fp_low)["map50"] == pytest.approx(1.0)
    assert detection_map(gt, fp_high)["map50"] == pytest.approx(0.5, abs=0.01)
    with pytest.raises(ValueError, match="scores"):
        detection_map(gt, [{"boxes": [[0, 0, 1, 1]]}])


def test_counts_behind_the_rates_and_the_agent_metric_order():
    from dawnet.ocr.agents import LineTargets
    from dawnet.ocr.metrics import (
        batch_cer,
        batch_line_accuracy,
        batch_wer,
        cer_counts,
        line_accuracy_counts,
        wer_counts,
    )

    refs, hyps = ["abcd", "x  y"], ["abd", "x y z"]  # NFC + collapsed spaces: "x y" vs "x y z"
    assert cer_counts(refs, hyps) == (1 + 2, 4 + 3)
    assert wer_counts(refs, hyps) == (1 + 1, 1 + 2)
    assert line_accuracy_counts(refs, hyps) == (0, 2)
    assert cer(refs, hyps) == 3 / 7 and wer(refs, hyps) == 2 / 3
    # the Agent protocol: (predictions, targets), targets as texts or LineTargets
    assert batch_cer(hyps, LineTargets(refs)) == cer_counts(refs, hyps) == batch_cer(hyps, refs)
    assert batch_wer(hyps, refs) == (2, 3) and batch_line_accuracy(["abcd", "q"], refs) == (1, 2)
    assert batch_cer(["ab"], ["abcdef"]) == (4, 6)  # the reference is the denominator, never the prediction
    assert cer_counts([""], ["ab"]) == (2, 0)  # no characters: counts, not an error (a batch may have none)
