"""Character n-gram LM: normalized distributions, Kneser-Ney continuation counts, perplexity, storage."""

import gzip
import math
import os

import numpy as np
import pytest

from dawnet.ocr.lm import BOS, EOS, UNK, CharNgramLM

TEXTS = [
    "the quick brown fox jumps over the lazy dog",
    "a stitch in time saves nine",
    "the early bird catches the worm",
    "all that glitters is not gold",
    "the pen is mightier than the sword",
    "actions speak louder than words",
    "where there is a will there is a way",
]


@pytest.mark.parametrize("order", [1, 2, 3, 6])
@pytest.mark.parametrize("context", ["", "th", "the qu", "zzzz", "xq!", "the pen is mightier than"])
def test_distributions_sum_to_one(order, context):
    lm = CharNgramLM.train(TEXTS, order=order, vocab="abcdefghijklmnopqrstuvwxyz .,!?XYZ")
    p = lm.distribution(context)
    assert p.shape == (len(lm.symbols),)
    assert np.all(p > 0), "every symbol keeps some probability"
    assert p.sum() == pytest.approx(1.0, abs=1e-9)
    assert sum(lm.prob(c, context) for c in lm.symbols) == pytest.approx(1.0, abs=1e-9)


def test_symbols_are_vocab_plus_end_and_unknown():
    lm = CharNgramLM.train(["ab"], order=2, vocab="abc")
    assert lm.vocab == "abc"
    assert lm.symbols == "abc" + EOS + UNK
    assert BOS not in lm.symbols
    # a character outside the vocabulary is scored through the UNK slot, never raises
    assert lm.prob("é", "a") == lm.prob(UNK, "a") > 0


def test_learns_the_text():
    lm = CharNgramLM.train(TEXTS, order=5)
    assert lm.prob("e", "th") > 0.5  # "th" is followed by "e" most of the time
    assert lm.prob("e", "th") > 10 * lm.prob("z", "th")
    assert lm.prob(EOS, "catches the worm") > lm.prob(EOS, "catches the")


def test_kneser_ney_uses_continuation_counts():
    # 'a' is frequent but only ever follows 'x'; 'b' is rarer but follows many characters. In an unseen
    # context the model backs off to continuation counts, so 'b' must beat 'a' (maximum likelihood would
    # say the opposite).
    texts = ["xa"] * 20 + ["pb", "qb", "rb", "sb", "tb"]
    lm = CharNgramLM.train(texts, order=2)
    assert lm.prob("a", "x") > 0.9
    assert lm.prob("b", "z") > lm.prob("a", "z")  # 'z' was never seen: lower order decides


def test_higher_order_lowers_perplexity_on_repetitive_text():
    train = ["abcabcabcabc abcabc"] * 10
    held_out = ["abcabcabc abcabcabcabc"]
    ppl = {n: CharNgramLM.train(train, order=n).perplexity(held_out) for n in (1, 2, 4)}
    assert ppl[4] < ppl[2] < ppl[1]
    assert ppl[4] < 1.5


def test_perplexity_in_domain_below_scrambled():
    lm = CharNgramLM.train(TEXTS[1:], order=4)
    held = [TEXTS[0]]
    rng = np.random.default_rng(0)
    scrambled = ["".join(rng.permutation(list(TEXTS[0])))]
    assert lm.perplexity(held) < lm.perplexity(scrambled)
    assert lm.score(TEXTS[0]) == pytest.approx(
        sum(math.log(lm.prob(c, TEXTS[0][:i])) for i, c in enumerate(TEXTS[0])) + math.log(lm.prob(EOS, TEXTS[0])))


def test_save_load_round_trip(tmp_path):
    lm = CharNgramLM.train(TEXTS, order=6, vocab="XYZ")
    path = lm.save(tmp_path / "lm.json.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["lm.json.gz"]  # no temporary files left behind
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # the process umask, not mkstemp's 0600
    back = CharNgramLM.load(path)
    assert back.num_contexts == lm.num_contexts == len(lm.to_dict()["contexts"]) > 0
    assert back.order == 6 and back.vocab == lm.vocab and back.symbols == lm.symbols
    for ctx in ["", "the", "where there is a", "qqq"]:
        np.testing.assert_allclose(back.distribution(ctx), lm.distribution(ctx), rtol=0, atol=1e-15)


def test_load_rejects_other_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="train one"):
        CharNgramLM.load(tmp_path / "missing.json.gz")
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"not gzip at all")
    with pytest.raises(ValueError, match="not a readable dawnet LM"):
        CharNgramLM.load(bad)
    other = tmp_path / "other.json.gz"
    other.write_bytes(gzip.compress(b'{"format": "something-else"}'))
    with pytest.raises(ValueError, match="not a dawnet character LM"):
        CharNgramLM.load(other)


def test_bad_training_input():
    with pytest.raises(ValueError, match="at least one line"):
        CharNgramLM.train([], order=3)
    with pytest.raises(ValueError, match="order"):
        CharNgramLM.train(["abc"], order=0)
    with pytest.raises(TypeError, match="str lines"):
        CharNgramLM.train([b"bytes"], order=2)
