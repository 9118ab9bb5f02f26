"""Decoding: CTC greedy (vectorized) and prefix beam search, attention greedy/beam, LM shallow fusion."""

import itertools
import math

import numpy as np
import pytest
import torch

import dawnet.ocr.models  # noqa: F401  (registers the presets)
from dawnet.ocr import decode as D
from dawnet.ocr.charset import Charset
from dawnet.ocr.lm import CharNgramLM
from dawnet.registry import create_model


def _greedy_reference(best, length, blank=0):
    out, prev = [], None
    for c in best[:length]:
        if c != prev and c != blank:
            out.append(c)
        prev = c
    return out


def test_ctc_greedy_merges_repeats_and_drops_blanks():
    # frames: a a _ a b b _ _ b  -> a a b b
    frames = [1, 1, 0, 1, 2, 2, 0, 0, 2]
    lp = torch.full((1, len(frames), 3), -10.0)
    lp[0, torch.arange(len(frames)), torch.tensor(frames)] = 0.0
    assert D.ctc_greedy(lp) == [[1, 1, 2, 2]]
    assert D.ctc_greedy(lp, torch.tensor([4])) == [[1, 1]]  # padded steps are ignored


def test_ctc_greedy_matches_a_loop_on_random_batches():
    g = torch.Generator().manual_seed(0)
    lp = torch.randn(6, 17, 5, generator=g).log_softmax(-1)
    lengths = torch.tensor([17, 1, 5, 16, 9, 2])
    got = D.ctc_greedy(lp, lengths)
    best = lp.argmax(-1).tolist()
    assert got == [_greedy_reference(best[i], int(lengths[i])) for i in range(6)]


def _label_probabilities(probs):
    """Sum of path probabilities per collapsed labeling, by enumerating every path (tiny T, C only)."""
    t, c = probs.shape
    totals = {}
    for path in itertools.product(range(c), repeat=t):
        label = tuple(_greedy_reference(path, t))
        totals[label] = totals.get(label, 0.0) + float(np.prod([probs[i, k] for i, k in enumerate(path)]))
    return totals


@pytest.mark.parametrize("seed", range(6))
def test_prefix_beam_search_finds_the_most_probable_labeling(seed):
    rng = np.random.default_rng(seed)
    probs = rng.dirichlet(np.ones(3) * 0.7, size=5)  # T=5, C=3 (blank + 2 characters)
    totals = _label_probabilities(probs)
    best = max(totals.values())
    got = tuple(D.ctc_prefix_beam_search(np.log(probs), beam=64, prune=None))
    assert totals[got] == pytest.approx(best, rel=1e-9)


@pytest.mark.parametrize("seed", range(8))
def test_beam_1_without_lm_equals_greedy_on_peaky_outputs(seed):
    # When each frame's best class holds most of the mass (what a trained model emits), keeping one
    # prefix is best-path decoding.
    rng = np.random.default_rng(seed)
    t, c = 40, 7
    best = rng.integers(0, c, size=t)
    logits = rng.normal(size=(t, c))
    logits[np.arange(t), best] += 6.0
    lp = torch.from_numpy(logits).log_softmax(-1)[None]
    assert D.ctc_beam_search(lp, beam=1, lm_weight=0.0) == D.ctc_greedy(lp)


def test_lm_fusion_resolves_an_ambiguous_frame():
    # "ca?" where the last frame is a 50/50 between 'r' and 't' (t slightly ahead); an LM trained on
    # "car" flips it to 'r'; without the LM (or weight 0) the model's choice stands.
    cs = Charset("acrt")
    a, c, r, t = (cs.index(ch) for ch in "acrt")
    frames = np.full((5, cs.num_ctc_classes), 1e-4)
    frames[0, c] = frames[1, 0] = frames[2, a] = frames[3, 0] = 1.0
    frames[4, t], frames[4, r] = 0.52, 0.48
    lp = np.log(frames / frames.sum(1, keepdims=True))
    lm = CharNgramLM.train(["car", "car", "a car", "cr"], order=3, vocab=cs.chars)
    assert cs.decode(D.ctc_prefix_beam_search(lp, beam=5)) == "cat"
    assert cs.decode(D.ctc_prefix_beam_search(lp, beam=5, lm=lm, charset=cs, lm_weight=0.0)) == "cat"
    assert cs.decode(D.ctc_prefix_beam_search(lp, beam=5, lm=lm, charset=cs, lm_weight=1.0)) == "car"


def test_insertion_bonus_favours_longer_outputs():
    cs = Charset("ab")
    # frame 2 is 60% blank, 40% 'b': without a bonus the best labeling is "a", with a large one "ab"
    probs = np.array([[0.01, 0.98, 0.01], [0.6, 0.0001, 0.3999]])
    lp = np.log(probs / probs.sum(1, keepdims=True))
    assert cs.decode(D.ctc_prefix_beam_search(lp, beam=4)) == "a"
    assert cs.decode(D.ctc_prefix_beam_search(lp, beam=4, bonus=2.0)) == "ab"


def test_lm_fusion_needs_the_charset():
    lm = CharNgramLM.train(["ab"], order=2)
    with pytest.raises(ValueError, match="charset"):
        D.ctc_prefix_beam_search(np.zeros((3, 3)), beam=2, lm=lm, lm_weight=0.5)
    with pytest.raises(ValueError, match="beam"):
        D.ctc_prefix_beam_search(np.zeros((3, 3)), beam=0)


@torch.no_grad()
def test_attention_beam_1_equals_greedy():
    torch.manual_seed(0)
    cs = Charset("abcdef ")
    model = create_model("attn_small", num_classes=cs.num_attn_classes).eval()
    x, widths = torch.rand(3, 1, 32, 72), torch.tensor([72, 40, 61])
    logits, lengths = model(x, widths)
    greedy = D.attention_greedy(logits, lengths, cs.end)
    feats, flens = model.forward_features(x, widths)
    beam1 = D.attention_beam_search(model.head, feats, flens, beam=1)
    assert beam1 == greedy
    # a wider beam returns a hypothesis at least as probable (under the model) as greedy's, here
    beam4 = D.attention_beam_search(model.head, feats, flens, beam=4)

    def log_prob(i, ids):  # the model's log-probability of line i reading ids, then the end token
        dec_in = torch.tensor([[cs.start, *ids]])
        lp = model.head.mask_specials(model.head(feats[i:i + 1], flens[i:i + 1], dec_in)).log_softmax(-1)[0]
        return float(sum(lp[s, c] for s, c in enumerate([*ids, cs.end])))

    assert len(beam4) == 3
    for i in range(3):
        assert log_prob(i, beam4[i]) >= log_prob(i, greedy[i]) - 1e-5


@torch.no_grad()
def test_attention_beam_with_lm_weight_zero_ignores_the_lm():
    torch.manual_seed(1)
    cs = Charset("abc")
    model = create_model("attn_small", num_classes=cs.num_attn_classes).eval()
    x, widths = torch.rand(2, 1, 32, 48), torch.tensor([48, 33])
    feats, flens = model.forward_features(x, widths)
    lm = CharNgramLM.train(["abc", "cab"], order=3, vocab=cs.chars)
    plain = D.attention_beam_search(model.head, feats, flens, beam=3)
    fused0 = D.attention_beam_search(model.head, feats, flens, beam=3, lm=lm, charset=cs, lm_weight=0.0)
    assert plain == fused0
    fused = D.attention_beam_search(model.head, feats, flens, beam=3, lm=lm, charset=cs, lm_weight=2.0)
    assert all(0 < i <= len(cs) for h in fused for i in h)  # only characters: no pad/start/end inside


def test_attention_greedy_stops_at_end():
    logits = torch.full((2, 5, 6), -5.0)
    # classes: 0 pad, 1..3 chars, 4 end, 5 start
    for i, tok in enumerate([1, 2, 4, 3, 3]):
        logits[0, i, tok] = 0.0
    for i, tok in enumerate([3, 3, 3, 3, 3]):
        logits[1, i, tok] = 0.0
    assert D.attention_greedy(logits, None, end_id=4) == [[1, 2], [3, 3, 3, 3, 3]]
    assert math.isfinite(float(logits.sum()))


# -- readings: text, per-character confidences, CTC frames -----------------------------------------------

def _peaked(frames, probs, classes=3):
    """(1, T, C) log-probs whose frame t puts ``probs[t]`` on class ``frames[t]``, the rest spread evenly."""
    p = torch.empty(1, len(frames), classes, dtype=torch.float64)
    for t, (c, q) in enumerate(zip(frames, probs)):
        p[0, t] = (1 - q) / (classes - 1)
        p[0, t, c] = q
    return p.log().float()


def test_ctc_greedy_readings_give_run_maxima_and_start_frames():
    # frames: a a _ a b b _ _ b -> "aabb"; confidences: the best probability within each character's run
    frames = [1, 1, 0, 1, 2, 2, 0, 0, 2]
    probs = [0.6, 0.9, 0.8, 0.7, 0.5, 0.95, 0.99, 0.6, 0.8]
    lp = _peaked(frames, probs)
    (r,) = D.ctc_greedy_readings(lp, None, Charset("ab"))
    assert r.text == "aabb" and str(r) == "aabb"
    assert r.frames == (0, 3, 4, 8)
    assert r.confidences == pytest.approx((0.9, 0.7, 0.95, 0.8), abs=1e-6)
    # valid lengths: padded frames are neither read nor counted in a run's maximum
    (r,) = D.ctc_greedy_readings(lp, torch.tensor([5]), Charset("ab"))
    assert (r.text, r.frames) == ("aab", (0, 3, 4))
    assert r.confidences == pytest.approx((0.9, 0.7, 0.5), abs=1e-6)
    # the ids are exactly ctc_greedy's, which also takes the recognizer's (log_probs, lengths) output
    assert D.ctc_greedy((lp, torch.tensor([5]))) == [[1, 1, 2]]


def test_ctc_greedy_readings_match_ctc_greedy_on_random_batches():
    g = torch.Generator().manual_seed(3)
    lp = torch.randn(5, 23, 6, generator=g).log_softmax(-1)
    lengths = torch.tensor([23, 1, 7, 20, 12])
    cs = Charset("abcde")
    got = D.ctc_greedy_readings(lp, lengths, cs)
    assert [r.text for r in got] == [cs.decode(i) for i in D.ctc_greedy(lp, lengths)]
    probs = lp.softmax(-1)
    for i, r in enumerate(got):
        best = probs[i].argmax(-1).tolist()
        for frame, conf, ch in zip(r.frames, r.confidences, r.text):
            assert best[frame] == cs.index(ch) and (frame == 0 or best[frame - 1] != best[frame])
            end = frame
            while end + 1 < int(lengths[i]) and best[end + 1] == best[frame]:
                end += 1
            assert conf == pytest.approx(float(probs[i, frame:end + 1, best[frame]].max()), abs=1e-7)


def _best_forced_path(lp, ids):
    """The most probable path over (T, C) log-probs that collapses to ``ids``, by enumeration (tiny T, C)."""
    t, c = lp.shape
    best, path = -math.inf, None
    for p in itertools.product(range(c), repeat=t):
        if _greedy_reference(p, t) == list(ids):
            s = float(sum(lp[i, k] for i, k in enumerate(p)))
            if s > best:
                best, path = s, p
    return path


@pytest.mark.parametrize("seed", range(6))
def test_ctc_align_finds_the_most_probable_path_that_reads_the_ids(seed):
    rng = np.random.default_rng(seed)
    lp = np.log(rng.dirichlet(np.ones(3), size=6))  # T=6, C=3
    ids = [[1, 2], [2, 2], [1], [1, 2, 1]][seed % 4]
    path = _best_forced_path(lp, ids)
    spans, prev = [], None
    for t, c in enumerate(path):  # (first, last) frame of each character's run on that path
        if c != 0 and c != prev:
            spans.append([t, t])
        elif c != 0:
            spans[-1][1] = t
        prev = c
    assert D.ctc_align(lp, ids) == [tuple(s) for s in spans]


def test_ctc_align_refuses_ids_the_frames_cannot_hold():
    with pytest.raises(ValueError, match="cannot be read from 3 CTC frames"):
        D.ctc_align(np.log(np.full((3, 3), 1 / 3)), [1, 1, 1])  # a a a needs blanks between: 5 frames


def test_ctc_readings_of_the_greedy_ids_equal_the_greedy_readings():
    g = torch.Generator().manual_seed(5)
    lp = (3 * torch.randn(4, 19, 5, generator=g)).log_softmax(-1)
    lengths = torch.tensor([19, 11, 4, 16])
    cs = Charset("abcd")
    greedy = D.ctc_greedy_readings(lp, lengths, cs)
    aligned = D.ctc_readings(lp, lengths, D.ctc_greedy(lp, lengths), cs)
    assert [(r.text, r.frames) for r in aligned] == [(r.text, r.frames) for r in greedy]
    for a, b in zip(aligned, greedy):
        assert a.confidences == pytest.approx(b.confidences, abs=1e-6)


def test_attention_readings_are_the_softmax_probability_of_each_step():
    cs = Charset("abc")  # pad 0, a b c 1..3, end 4, start 5
    logits = torch.zeros(2, 3, 6)
    logits[0, 0, 1], logits[0, 1, 3] = 2.0, 1.0
    (r0, r1) = D.attention_readings(logits, [[1, 3], []], cs)
    assert r0.text == "ac" and r0.frames is None
    assert r0.confidences == pytest.approx((math.exp(2) / (math.exp(2) + 5), math.e / (math.e + 5)))
    assert (r1.text, r1.confidences) == ("", ())


def test_ctc_reader_takes_what_a_recognizer_returns_and_a_charset():
    torch.manual_seed(0)
    cs = Charset("abc ")
    model = create_model("crnn_small", num_classes=cs.num_ctc_classes).eval()
    x, widths = torch.rand(2, 1, 32, 64), torch.tensor([64, 40])
    with torch.no_grad():
        out = model(x, widths)
    readings = D.ctc_reader(cs)(out)
    assert [r.text for r in readings] == [cs.decode(i) for i in D.ctc_greedy(*out)]
    assert [r.text for r in D.ctc_reader("abc ")(out[0])] == [cs.decode(i) for i in D.ctc_greedy(out[0])]
    with pytest.raises(ValueError, match="has 5 classes but the charset has 2 characters"):
        D.ctc_reader(Charset("ab"))(out)
    with pytest.raises(ValueError, match=r"expected \(N, T, C\) CTC outputs"):
        D.ctc_greedy(out[0][0])
