"""CTC and attention agents: raw lines in, text out; overfitting a tiny set; checkpoints; train/eval/read CLI."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

import dawnet.ocr.models  # noqa: F401  (registers the presets)
from dawnet import cli
from dawnet.agent import Agent
from dawnet.ocr import decode as D
from dawnet.ocr.agents import AttentionAgent, CTCAgent, LineImageError, LineTargets, prepare_line
from dawnet.ocr.charset import Charset
from dawnet.ocr.data.datasets import collate_lines, to_tensor
from dawnet.ocr.data.fonts import find_fonts
from dawnet.ocr.data.formats import write_folder
from dawnet.ocr.data.synth import LineSynthesizer
from dawnet.ocr.lm import CharNgramLM
from dawnet.ocr.metrics import text_metrics
from dawnet.registry import create_model, register_model

TEXTS = ["hello", "world 42", "dawnet", "ocr line"]



@pytest.fixture(scope="module")
def lines():
    """Real rendered handwriting lines (one installed handwriting font), as PIL images."""
    fonts = find_fonts()
    synth = LineSynthesizer([f for f in fonts if f.covers("".join(TEXTS))][:1])
    return [synth.render(t, seed=i).image for i, t in enumerate(TEXTS)]


def _batch(images, texts, height=32):
    items = [{"image": to_tensor(im, height), "text": t} for im, t in zip(images, texts)]
    return collate_lines(items)


def _agent(kind, charset, lr=3e-3, **kw):
    torch.manual_seed(0)
    if kind == "ctc":
        model = create_model("crnn_small", num_classes=charset.num_ctc_classes)
        return CTCAgent(model, torch.optim.Adam(model.parameters(), lr), charset=charset, device="cpu", **kw)
    model = create_model("attn_small", num_classes=charset.num_attn_classes)
    return AttentionAgent(model, torch.optim.Adam(model.parameters(), lr), charset=charset, device="cpu", **kw)


# -- raw line images -------------------------------------------------------------------------------------

def test_prepare_line_matches_the_training_conversion(lines):
    im = lines[0]
    x, notes = prepare_line(im, 32)
    assert notes == []
    assert x.shape[:3] == (1, 1, 32)
    torch.testing.assert_close(x[0], to_tensor(im, 32))  # exactly what the datasets feed the model
    assert x.max() > 0.5 and x.min() >= 0.0  # ink is bright


def test_prepare_line_converts_colour_and_says_so(lines):
    rgb = lines[0].convert("RGB")
    x, notes = prepare_line(rgb, 32)
    assert any("colour" in n for n in notes)
    torch.testing.assert_close(x, prepare_line(lines[0], 32)[0], atol=1 / 255, rtol=0)


def test_prepare_line_reads_16_bit_and_alpha_lines_as_their_8_bit_original(tmp_path, lines):
    """A 16-bit scan (file or array) and ink drawn only in alpha read exactly as the 8-bit line."""
    eight = np.asarray(lines[0])
    want = prepare_line(lines[0], 32)[0]
    sixteen = eight.astype(np.uint16) * 257  # 0..255 -> 0..65535
    Image.fromarray(sixteen).save(tmp_path / "16.png")
    torch.testing.assert_close(prepare_line(tmp_path / "16.png", 32)[0], want, atol=0, rtol=0)
    torch.testing.assert_close(prepare_line(sixteen, 32)[0], want, atol=0, rtol=0)
    alpha = np.zeros((*eight.shape, 4), dtype=np.uint8)  # black ink whose shape is only in alpha
    alpha[..., 3] = 255 - eight
    x, notes = prepare_line(Image.fromarray(alpha, mode="RGBA"), 32)
    assert notes == ["colour image (RGB) converted to grayscale"]
    torch.testing.assert_close(x, want, atol=1 / 255, rtol=0)


@pytest.mark.parametrize("image, match", [
    (Image.new("L", (200, 40), 255), "blank"),
    (np.zeros((0, 10), dtype=np.uint8), "empty"),
    (Image.new("L", (30, 5), 0), "only 5 px high"),
    (np.random.default_rng(0).integers(0, 255, (20, 20000), dtype=np.uint8), "too wide"),
    (np.random.default_rng(0).integers(0, 255, (2000, 1400), dtype=np.uint8), "page"),
])
def test_prepare_line_rejects_what_is_not_a_line(image, match):
    with pytest.raises(LineImageError, match=match):
        prepare_line(image, 32)


def test_infer_from_path_pil_numpy_and_tensor(tmp_path, lines):
    cs = Charset.from_texts(TEXTS)
    agent = _agent("ctc", cs)
    path = tmp_path / "line.png"
    lines[1].save(path)
    agent.learn(_batch(lines, TEXTS))  # past the all-blank output of a fresh model
    want = agent.read(lines[1])[0].text
    assert [agent.infer(path), agent.infer(lines[1]), agent.infer(np.asarray(lines[1]))] == [want] * 3
    assert agent.infer(torch.from_numpy(np.asarray(lines[1]).copy())) == want  # uint8 tensor: 0..255 levels


# -- reading: read / read_lines / read_batch / read_outputs, one decoder setting --------------------------

@pytest.mark.parametrize("kind, decoder", [("ctc", {}), ("ctc", {"beam": 3, "bonus": 0.5}), ("attn", {}),
                                           ("attn", {"beam": 3, "bonus": 0.5})])
def test_read_gives_what_infer_and_validation_decode_give(lines, kind, decoder):
    cs = Charset.from_texts(TEXTS)
    agent = _agent(kind, cs, decoder=decoder)
    agent.learn(_batch(lines, TEXTS))  # not all blanks: a step of learning gives the model some output
    singles = [agent.infer(im) for im in lines]
    readings = agent.read(lines, batch_size=3)  # two padded batches, width-sorted
    assert [r.text for r in readings] == singles
    for r in readings:
        assert len(r.confidences) == len(r.text) and all(0.0 < c <= 1.0 for c in r.confidences)
        assert (r.frames is None) == (kind == "attn") and r.notes == ()
        if kind == "ctc":
            assert len(r.frames) == len(r.text) and list(r.frames) == sorted(set(r.frames))
    batch = _batch(lines, TEXTS)
    got = agent.read_batch(batch["images"], batch["widths"])
    assert [r.text for r in got] == singles
    inputs, _ = agent.unpack(batch)  # attention: teacher-forcing inputs; predict decodes freely from the images
    agent.model.eval()
    with torch.no_grad():
        assert agent.predict(agent.model(*inputs), inputs) == singles
    assert agent.model.training is False
    agent.model.train()
    agent.read_batch(batch["images"], batch["widths"])
    assert agent.model.training  # read_batch restores the mode


def test_ctc_read_batch_confidences_are_the_softmax_maxima_of_the_model_output(lines):
    cs = Charset.from_texts(TEXTS)
    agent = _agent("ctc", cs)
    agent.learn(_batch(lines, TEXTS))
    batch = _batch(lines, TEXTS)
    agent.model.eval()
    with torch.no_grad():
        log_probs, lengths = agent.model(batch["images"], batch["widths"])
    probs = log_probs.softmax(-1)
    for i, r in enumerate(agent.read_batch(batch["images"], batch["widths"])):
        best = probs[i, :int(lengths[i])].argmax(-1)
        for frame, conf in zip(r.frames, r.confidences):
            run_end = frame
            while run_end + 1 < len(best) and best[run_end + 1] == best[frame]:
                run_end += 1
            assert conf == pytest.approx(float(probs[i, frame:run_end + 1, best[frame]].max()), abs=1e-6)


def test_attention_beam_confidences_equal_the_greedy_ones_when_the_beam_finds_the_greedy_line(lines):
    """Beam readings take each character's probability from a teacher-forced pass over the ids found; when
    beam 1 (a vanishing bonus keeps it a beam search) finds greedy's line, they are greedy's probabilities."""
    cs = Charset.from_texts(TEXTS)
    agent = _agent("attn", cs)
    agent.learn(_batch(lines, TEXTS))
    batch = _batch(lines, TEXTS)
    greedy = agent.read_batch(batch["images"], batch["widths"])
    agent.set_decoder(beam=1, bonus=1e-12)
    assert not agent.greedy
    beam = agent.read_batch(batch["images"], batch["widths"])
    assert [r.text for r in beam] == [r.text for r in greedy]
    for a, b in zip(beam, greedy):
        assert a.confidences == pytest.approx(b.confidences, abs=1e-5)


def test_read_takes_one_image_or_a_list_notes_conversions_and_names_bad_images(tmp_path, lines):
    cs = Charset.from_texts(TEXTS)
    agent = _agent("ctc", cs)
    path = tmp_path / "line.png"
    lines[1].convert("RGB").save(path)
    (one,) = agent.read(str(path))
    assert one.text == agent.infer(lines[1].convert("RGB")) and any("colour" in n for n in one.notes)
    assert [r.text for r in agent.read([np.asarray(lines[0]), lines[2]])] == [agent.infer(lines[0]),
                                                                              agent.infer(lines[2])]
    with pytest.raises(LineImageError, match=r"^image 1: the image is blank"):
        agent.read([lines[0], Image.new("L", (200, 40), 255)])
    with pytest.raises(TypeError, match=r"read\(\) takes a line image"):
        agent.read(42)


def test_pad_lines_pads_with_paper_and_refuses_mixed_heights():
    from dawnet.ocr.agents import pad_lines

    a, b = torch.ones(1, 1, 4, 3), torch.full((1, 1, 4, 5), 0.5)
    x, widths = pad_lines([a, b])
    assert x.shape == (2, 1, 4, 5) and widths.tolist() == [3, 5]
    assert x[0, 0, :, :3].eq(1).all() and x[0, 0, :, 3:].eq(0).all() and x[1].eq(0.5).all()
    with pytest.raises(ValueError, match="different heights"):
        pad_lines([a, torch.ones(1, 1, 5, 3)])


def test_agent_kinds_and_metrics_from_the_metrics_module():
    from dawnet.ocr import agents, metrics

    cs = Charset.from_texts(TEXTS)
    assert (_agent("ctc", cs).kind, _agent("attn", cs).kind) == ("ctc", "attention")
    assert _agent("ctc", cs).metrics == {"cer": metrics.batch_cer, "wer": metrics.batch_wer}
    # the names older checkpoints stored resolve to the same implementation
    assert (agents.cer, agents.wer, agents.line_accuracy) == (metrics.batch_cer, metrics.batch_wer,
                                                             metrics.batch_line_accuracy)


# -- batches, losses, checkpoints -------------------------------------------------------------------------

def test_attention_unpack_builds_teacher_forcing_inputs(lines):
    cs = Charset.from_texts(TEXTS)
    agent = _agent("attn", cs)
    (x, widths, dec_in), targets = agent.unpack(_batch(lines[:2], TEXTS[:2]))
    assert isinstance(targets, LineTargets) and targets.texts == TEXTS[:2]
    ids = [cs.encode(t) for t in TEXTS[:2]]
    s = max(map(len, ids)) + 1
    assert dec_in.shape == targets.ids.shape == (2, s)
    assert dec_in[0, :len(ids[0]) + 1].tolist() == [cs.start, *ids[0]]
    assert targets.ids[0].tolist() == [*ids[0], cs.end] + [cs.pad] * (s - len(ids[0]) - 1)
    loss = agent.compute_loss(agent.model(x, widths, dec_in), targets)
    assert loss.ndim == 0 and torch.isfinite(loss)


def test_joint_ctc_attention_loss_mixes_both_per_character(lines):
    """aux_ctc: loss = (1 - w) cross-entropy + w CTC (mean per character); w = 0 is the decoder alone."""
    import torch.nn.functional as F

    cs = Charset.from_texts(TEXTS)
    torch.manual_seed(0)
    model = create_model("attn_small", num_classes=cs.num_attn_classes, aux_ctc=True)
    opt = torch.optim.Adam(model.parameters())
    plain = AttentionAgent(model, opt, charset=cs, device="cpu", ctc_weight=0.0)
    joint = AttentionAgent(model, opt, charset=cs, device="cpu", ctc_weight=0.4)
    inputs, targets = plain.unpack(_batch(lines[:3], TEXTS[:3]))
    out = model(*inputs)
    ce = F.cross_entropy(out[0].reshape(-1, out[0].shape[-1]), targets.ids.reshape(-1), ignore_index=cs.pad)
    flat, lens = cs.encode_batch(TEXTS[:3])
    ctc = F.ctc_loss(out[2][0].transpose(0, 1), flat, out[2][1], lens, blank=cs.blank, zero_infinity=True)
    assert float(plain.compute_loss(out, targets).detach()) == pytest.approx(float(ce.detach()))
    assert float(joint.compute_loss(out, targets).detach()) == pytest.approx(float((0.6 * ce + 0.4 * ctc).detach()))
    assert joint.config()["ctc_weight"] == 0.4
    # the third output never reaches decoding: teacher-forced outputs are decoded afresh from the images
    assert plain.decode(out, inputs[0], inputs[1], teacher_forced=True) == [
        r.text for r in plain.read_batch(*inputs[:2])]
    with pytest.raises(ValueError, match="ctc_weight"):
        AttentionAgent(model, opt, charset=cs, device="cpu", ctc_weight=1.0)


def test_charset_must_fit_the_model():
    cs = Charset("abc")
    model = create_model("crnn_small", num_classes=10)
    with pytest.raises(ValueError, match="num_classes=4"):
        CTCAgent(model, torch.optim.Adam(model.parameters()), charset=cs, device="cpu")


@pytest.mark.parametrize("kind", ["ctc", "attn"])
def test_checkpoint_round_trip_restores_agent_charset_and_decoder(tmp_path, lines, kind):
    cs = Charset.from_texts(TEXTS)
    agent = _agent(kind, cs, decoder={"beam": 3, "bonus": 0.5})
    batch = _batch(lines, TEXTS)
    agent.learn(batch)
    before = [agent.infer(im) for im in lines]
    agent.save(tmp_path / "a.pt")
    back = Agent.load(tmp_path / "a.pt", map_location="cpu")
    assert type(back) is type(agent)
    assert back.charset == cs and back.decoder == agent.decoder and back.step == 1
    assert [back.infer(im) for im in lines] == before


# -- learning: each model overfits a tiny set (proves loss and decoder wiring) -----------------------------

@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ctc", "attn"])
def test_overfits_a_tiny_set_to_zero_errors(tmp_path, lines, kind, capsys):
    cs = Charset.from_texts(TEXTS)
    agent = _agent(kind, cs)
    batch = _batch(lines, TEXTS)
    for step in range(400):
        agent.learn(batch)
        if step % 20 == 19 and agent.evaluate([batch])["cer"] == 0.0:
            break
    result = agent.evaluate([batch])
    assert result["cer"] == 0.0 and result["wer"] == 0.0, result
    assert [agent.infer(im) for im in lines] == TEXTS

    # beam search at beam 1 with LM weight 0 decodes what greedy decodes
    agent.model.eval()
    x, widths = batch["images"], batch["widths"]
    with torch.no_grad():
        if kind == "ctc":
            lp, lengths = agent.model(x, widths)
            assert D.ctc_beam_search(lp, lengths, beam=1) == D.ctc_greedy(lp, lengths)
        else:
            logits, lengths = agent.model(x, widths)
            feats, flens = agent.model.forward_features(x, widths)
            assert D.attention_beam_search(agent.model.head, feats, flens, beam=1) == D.attention_greedy(
                logits, lengths, cs.end)
    lm = CharNgramLM.train(TEXTS * 3, order=3, vocab=cs.chars)
    agent.set_decoder(beam=4, lm=lm, lm_weight=0.3)
    assert agent.evaluate([batch])["cer"] == 0.0  # a trained model + a matching LM stays right

    # save -> `dawnet read` round trip
    agent.set_decoder(beam=1, lm_weight=0.0)
    agent.save(tmp_path / "model.pt")
    paths = []
    for i, im in enumerate(lines):
        paths.append(str(tmp_path / f"{i}.png"))
        im.save(paths[-1])
    capsys.readouterr()
    assert cli.main(["read", str(tmp_path / "model.pt"), *paths, "--json"]) == 0
    got = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [g["text"] for g in got] == TEXTS


# -- the CLI -----------------------------------------------------------------------------------------------

@register_model("toy_net_for_agent_tests")
class _Toy(torch.nn.Module):
    def __init__(self, n: int = 3):
        super().__init__()
        self.fc = torch.nn.Linear(n, 2)

    def forward(self, x):
        return self.fc(x)


def test_read_refuses_a_checkpoint_that_is_not_a_recognizer(tmp_path, lines, capsys):
    model = create_model("toy_net_for_agent_tests")
    Agent(model, torch.optim.SGD(model.parameters(), 0.1), device="cpu").save(tmp_path / "other.pt")
    lines[0].save(tmp_path / "l.png")
    assert cli.main(["read", str(tmp_path / "other.pt"), str(tmp_path / "l.png")]) == 2
    err = capsys.readouterr().err
    assert "not a text-line recognizer" in err and "Traceback" not in err


def test_read_reports_bad_images_and_reads_the_rest(tmp_path, lines, capsys):
    cs = Charset.from_texts(TEXTS)
    _agent("ctc", cs).save(tmp_path / "m.pt")
    good, blank, missing = tmp_path / "good.png", tmp_path / "blank.png", tmp_path / "missing.png"
    lines[0].convert("RGB").save(good)
    Image.new("L", (100, 32), 255).save(blank)
    capsys.readouterr()
    assert cli.main(["read", str(tmp_path / "m.pt"), str(good), str(blank), str(missing)]) == 1
    out, err = capsys.readouterr()
    assert out.startswith(f"{good}\t")
    assert "blank" in err and "does not exist" in err and "colour" in err and "Traceback" not in err
    assert cli.main(["read", str(tmp_path / "m.pt"), str(blank)]) == 2  # nothing readable at all


def test_eval_on_a_folder_of_png_and_gt_txt(tmp_path, lines, capsys):
    cs = Charset.from_texts(TEXTS)
    _agent("ctc", cs).save(tmp_path / "m.pt")
    write_folder(list(zip(lines, TEXTS)), tmp_path / "data")
    assert sorted(p.name for p in (tmp_path / "data").iterdir())[:2] != []
    capsys.readouterr()
    assert cli.main(["eval", str(tmp_path / "m.pt"), "--data", str(tmp_path / "data"), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = text_metrics(TEXTS, [r.text for r in Agent.load(tmp_path / "m.pt").read(lines)])
    assert result["lines"] == 4
    for key in ("cer", "wer", "word_accuracy", "line_accuracy", "one_minus_ned"):
        assert result[key] == pytest.approx(expected[key], abs=1e-12), key
    assert result["lines_per_s"] > 0


@pytest.mark.slow
def test_train_command_on_a_folder_then_eval_and_charlm(tmp_path, lines, capsys):
    data = tmp_path / "data"
    write_folder(list(zip(lines, TEXTS)), data / "train")
    write_folder(list(zip(lines[:2], TEXTS[:2])), data / "val")
    out = tmp_path / "run"
    assert cli.main(["train", "crnn_small", "--data", str(data), "--steps", "3", "--batch-size", "2",
                     "--out", str(out), "--workers", "0", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["steps"] == 3 and (out / "last.pt").is_file() and "val_cer" in summary
    # running again with a larger total resumes from last.pt
    assert cli.main(["train", "crnn_small", "--data", str(data), "--steps", "4", "--batch-size", "2",
                     "--out", str(out), "--workers", "0", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 4
    assert cli.main(["train", "charlm", "--data", str(data), "--order", "3", "--out", str(tmp_path / "lm"),
                     "--json"]) == 0
    lm_summary = json.loads(capsys.readouterr().out)
    assert lm_summary["train_lines"] == 4 and lm_summary["held_out_perplexity"] > 1
    assert cli.main(["eval", str(out / "last.pt"), "--data", str(data / "val"), "--lm",
                     str(tmp_path / "lm" / "lm.json.gz"), "--beam", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["decoder"]["beam"] == 3
