"""Charset: id layouts, round trips (spaces included), NFC, unknown characters, JSON storage."""

import json
import unicodedata
import warnings

import pytest
import torch

from dawnet.ocr.charset import Charset, UnknownCharacterError, normalize


def test_layout_ctc_and_attention():
    cs = Charset("abc ")
    assert cs.chars == "abc "
    assert len(cs) == 4
    assert cs.blank == 0 and cs.pad == 0
    assert [cs.index(c) for c in "abc "] == [1, 2, 3, 4]
    assert cs.num_ctc_classes == 5
    assert cs.end == 5 and cs.start == 6 and cs.num_attn_classes == 7


def test_multiword_round_trip_keeps_spaces():
    texts = ["Hello world, 42 times!", "a  b", " lead and trail "]
    cs = Charset.from_texts(texts)
    for text in texts:
        assert cs.decode(cs.encode(text)) == text
    assert " " in cs


def test_from_texts_is_sorted_and_reproducible():
    a = Charset.from_texts(["zyx", "abc"])
    b = Charset.from_texts(["abc", "zyx", "cab"])
    assert a == b and a.chars == "abcxyz"


def test_nfc_normalization_joins_combining_marks():
    decomposed = "e\u0301"  # e + combining acute
    assert normalize(decomposed) == "\u00e9"
    cs = Charset.from_texts(["caf\u00e9"])
    assert cs.encode("cafe\u0301") == cs.encode("caf\u00e9")
    assert unicodedata.is_normalized("NFC", cs.decode(cs.encode("cafe\u0301")))


def test_unknown_characters_raise_listing_them():
    cs = Charset("abc")
    with pytest.raises(UnknownCharacterError) as e:
        cs.encode("abxyx")
    assert e.value.counts == {"x": 2, "y": 1}
    assert "'x'" in str(e.value) and "U+0078" in str(e.value) and "unknown='map'" in str(e.value)


def test_unknown_map_counts_and_warns():
    cs = Charset("abc", unknown="\ufffd")
    assert cs.chars == "abc\ufffd"
    with pytest.warns(UserWarning, match="outside the alphabet"):
        ids = cs.encode("axb", unknown="map")
    assert ids == [1, 4, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a character already reported is counted, not warned again
        cs.encode("xx", unknown="map")
    assert cs.unknown_counts == {"x": 3}


def test_map_without_unknown_token_is_an_error():
    with pytest.raises(ValueError, match="unknown token"):
        Charset("abc").encode("z", unknown="map")


def test_bad_alphabets_are_refused():
    with pytest.raises(ValueError, match="duplicate"):
        Charset("abca")
    with pytest.raises(ValueError, match="control"):
        Charset("ab\n")
    with pytest.raises(ValueError, match="one Unicode code point"):
        Charset(["ab", "c"])
    with pytest.raises(ValueError, match="at least one"):
        Charset("")


def test_decode_skips_specials_and_refuses_foreign_ids():
    cs = Charset("ab")
    assert cs.decode([0, 1, 0, 2, cs.end, cs.start]) == "ab"
    with pytest.raises(ValueError, match="outside this charset"):
        cs.decode([99])


def test_attention_sequence():
    cs = Charset("ab ")
    seq = cs.encode_attn("a b")
    assert seq == [cs.start, 1, 3, 2, cs.end]
    assert cs.decode_attn(seq[1:] + [1, 1]) == "a b"  # stops at end


def test_json_round_trip():
    cs = Charset.from_texts(["Grüße, 1 €"], unknown="\ufffd")
    back = Charset.from_dict(json.loads(json.dumps(cs.to_dict())))
    assert back == cs and back.unknown == "\ufffd"
    with pytest.raises(ValueError, match="not a charset"):
        Charset.from_dict({"x": 1})


def test_encode_batch_matches_ctc_loss_layout():
    cs = Charset("abc ")
    flat, lengths = cs.encode_batch(["ab", "c a"])
    assert flat.tolist() == [1, 2, 3, 4, 1] and lengths.tolist() == [2, 3]
    logp = torch.randn(10, 2, cs.num_ctc_classes).log_softmax(-1)
    loss = torch.nn.CTCLoss(blank=cs.blank)(logp, flat, torch.tensor([10, 10]), lengths)
    assert torch.isfinite(loss)
