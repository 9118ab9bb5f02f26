"""Text: offline English, cut into handwritten lines, split so held-out lines never reach the LM text."""

import numpy as np
import pytest

from dawnet.ocr.data.text import TEXT_ALPHABET, build_corpus, cut_lines, load_documents, split_documents


@pytest.fixture(scope="module")
def corpus():
    return build_corpus(0, "fortunes")


def test_lines_have_handwritten_lengths_and_the_alphabet(corpus):
    for split in ("train", "val", "test"):
        lines = corpus.lines[split]
        assert len(lines) > 1000
        words = [len(t.split(" ")) for t in lines]
        assert min(words) >= 1 and max(words) <= 10
        assert max(len(t) for t in lines) <= 48
        assert set("".join(lines)) <= set(TEXT_ALPHABET)
    every = "".join(corpus.lines["train"])
    assert any(c.isdigit() for c in every) and any(c in ",.;!?" for c in every)


def test_left_out_documents_are_counted_with_their_characters(corpus):
    r = corpus.report
    assert r["documents"] == sum(len(v) for v in corpus.documents.values())
    assert r["left_out"]["outside_alphabet"] > 0 and r["chars_outside_alphabet"]
    assert not set(r["chars_outside_alphabet"]) & set(TEXT_ALPHABET)
    assert r["lines"] == {k: len(v) for k, v in corpus.lines.items()}


def test_splits_are_disjoint_and_lm_text_excludes_held_out(corpus):
    docs = corpus.documents
    assert not set(docs["train"]) & set(docs["test"])
    assert not set(docs["train"]) & set(docs["val"])
    assert corpus.lm_text is docs["train"]
    train_lines = set(corpus.lines["train"])
    assert not train_lines & set(corpus.lines["test"])
    assert not train_lines & set(corpus.lines["val"])
    # every test line comes from a held-out document, never from the LM's text
    lm = set(corpus.lm_text)
    test_docs = set(docs["test"])
    assert all(d not in lm for d in test_docs)


def test_cutting_is_deterministic_and_keeps_every_word():
    docs = ["one two three four five six seven eight nine ten eleven twelve thirteen"]
    a = cut_lines(docs, np.random.default_rng(3))
    b = cut_lines(docs, np.random.default_rng(3))
    assert a == b
    assert " ".join(a) == docs[0]


def test_split_by_hash_is_stable_when_documents_are_added():
    docs = [f"document number {i} about something" for i in range(200)]
    s1 = split_documents(docs)
    s2 = split_documents(docs + ["a new one arrives later"])
    for k in s1:
        assert set(s1[k]) <= set(s2[k])
    with pytest.raises(ValueError, match="sum"):
        split_documents(docs, (0.5, 0.1, 0.1))


def test_pydoc_source_is_an_offline_fallback():
    docs = load_documents("pydoc")
    assert len(docs) > 100 and all(set(d) <= set(TEXT_ALPHABET) for d in docs)
    with pytest.raises(ValueError, match="unknown text source"):
        load_documents("web")
