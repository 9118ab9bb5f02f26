"""ONNX export and ONNX Runtime inference (issue 19), and the vectorized CTC prefix beam search.

Parity is checked for every registered preset on seeded smoke weights (BatchNorm statistics perturbed so that
folding them is exercised): fp32 outputs within 1e-4 (max abs) of PyTorch on padded batches of other widths
and sizes than the export's, greedy transcriptions identical, detector boxes after NMS within 0.5 px. The beam
search tests need no ONNX packages: the vectorized search must give exactly what the per-prefix reference gives.
"""

import hashlib
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

import dawnet.ocr.models  # noqa: F401  (registers the presets)
from dawnet.ocr import decode as D
from dawnet.ocr.agents import recognizer_agent
from dawnet.ocr.charset import Charset
from dawnet.ocr.detection import DetectionAgent
from dawnet.ocr.lm import CharNgramLM
from dawnet.ocr.models.recognizer import model_cfgs
from dawnet.ocr.models.yolo import yolo_cfgs
from dawnet.registry import create_model

CS = Charset("abcdefghijklmnopqrstuvwxyz .,'")
TOL = 1e-4
HEAVY = {"crnn_large", "crnn_resnet", "attn_resnet", "attn_luong", "crnn_medium", "yolo_large"}

needs_onnx = pytest.mark.skipif(
    any(__import__("importlib").util.find_spec(m) is None for m in ("onnx", "onnxruntime")),
    reason="needs pip install 'dawnet[onnx]'")


def _preset(name):
    return pytest.param(name, marks=[pytest.mark.slow] if name in HEAVY else [])


def _smoke(model, seed=0):
    """Seeded weights with non-trivial BatchNorm statistics and affine parameters."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(1 + 0.2 * torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))
    return model.eval()


def _recognizer(name):
    torch.manual_seed(0)
    ctc = model_cfgs[name]["head"] == "ctc"
    model = _smoke(create_model(name, num_classes=CS.num_ctc_classes if ctc else CS.num_attn_classes))
    return recognizer_agent(model, torch.optim.SGD(model.parameters(), lr=0.1), CS, device="cpu")


def _page():
    page = Image.new("L", (300, 220), 240)
    draw = ImageDraw.Draw(page)
    for y in (30, 90, 150):
        draw.text((20, y), "some handwriting on a line", fill=10)
    return page


def _detector(name="yolo", size=256):
    """Smoke weights whose objectness passes the threshold at a few points of :func:`_page`, with distinct scores:
    untrained objectness sits at its 1% prior everywhere, and near-equal scores let any 1e-6 swap NMS's order."""
    from dawnet.ocr.detection import letterbox

    torch.manual_seed(0)
    model = _smoke(create_model(name))
    g = torch.Generator().manual_seed(1)
    model.obj.weight.data.normal_(0.0, 30.0, generator=g)
    model.box.weight.data.normal_(0.0, 0.05, generator=g)
    model.obj.bias.data.zero_()
    with torch.no_grad():
        logits = model(letterbox(_page(), size)[0][None])[0, 0].flatten()
    model.obj.bias.data.fill_(-float(logits.quantile(0.97)))  # the top 3% of points score above 0.5
    return DetectionAgent(model, torch.optim.SGD(model.parameters(), lr=0.1), size=size, device="cpu")


def _lines(agent, widths, seed=3):
    g = torch.Generator().manual_seed(seed)
    h = agent.model.height
    x = torch.rand(len(widths), 1, h, max(widths), generator=g)
    for i, w in enumerate(widths):
        x[i, :, :, w:] = 0.0
    return x, torch.tensor(widths)


def _line_image(text="hello world", seed=0):
    """A dark-on-light line image (PIL's default font), so prepare() has something line-shaped to read."""
    im = Image.new("L", (12 + 7 * len(text), 28), 235)
    ImageDraw.Draw(im).text((6, 8), text, fill=20)
    a = np.asarray(im, dtype=np.float32) + np.random.default_rng(seed).normal(0, 6, (im.height, im.width))
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))


# -- export + runtime parity, every preset --------------------------------------------------------------------

@needs_onnx
@pytest.mark.parametrize("name", [_preset(n) for n in model_cfgs])
def test_recognizer_export_holds_parity(name, tmp_path):
    from dawnet.ocr.onnx import export_onnx, load

    agent = _recognizer(name)
    result = export_onnx(agent, tmp_path / f"{name}.onnx")
    assert result.parity["max_abs"] <= TOL and result.parity["greedy_equal"] == result.parity["lines"] == 3
    rt = load(tmp_path / f"{name}.onnx", threads=1)
    meta = rt.metadata
    assert meta["charset"]["chars"] == CS.chars and rt.charset == CS
    assert (meta["height"], meta["in_chans"], meta["min_width"]) == (32, 1, agent.model.min_width)
    assert meta["decoder"] == ("ctc" if agent.model.head_kind == "ctc" else "attention")
    assert meta["normalization"]["ink"] == 1.0 and meta["normalization"]["paper"] == 0.0
    assert meta["model"] == name and meta["dtype"] == "float32"
    # other batch sizes and widths than the export's; the second batch is unpadded
    for widths in ([300, 64, 211, 129], [97]):
        x, w = _lines(agent, widths)
        with torch.no_grad():
            ref, ref_len = agent.model(x, w)
        got, got_len = rt.model(x, w)
        assert torch.equal(got_len, ref_len)
        assert got.shape == ref.shape
        finite = torch.isfinite(ref)
        assert torch.equal(finite, torch.isfinite(got))
        assert float((got - ref)[finite].abs().max()) <= TOL
        assert rt.decode((got, got_len), x, w) == agent.decode((ref, ref_len), x, w)
        readings, want = rt.read_batch(x, w), agent.read_batch(x, w)
        assert [r.text for r in readings] == [r.text for r in want]
        for r, q in zip(readings, want):
            assert np.allclose(r.confidences, q.confidences, atol=1e-4)
    image = _line_image()
    assert rt.infer(image) == agent.infer(image)


@needs_onnx
@pytest.mark.parametrize("name", ["crnn", "attn"])
def test_runtime_beam_and_lm_decoding_equal_pytorch(name, tmp_path):
    from dawnet.ocr.onnx import export_onnx, load_recognizer

    agent = _recognizer(name)
    export_onnx(agent, tmp_path / "m.onnx")
    rt = load_recognizer(tmp_path / "m.onnx")
    lm = CharNgramLM.train(["the quick brown fox", "jumps over the lazy dog", "hello world"], order=3,
                           vocab=CS.chars)
    for r in (agent, rt):
        r.set_decoder(beam=4, lm=lm, lm_weight=0.5, bonus=1.0)
    x, w = _lines(agent, [180, 120, 77])
    with torch.no_grad():
        ref = agent.decode(agent.model(x, w), x, w)
    assert rt.decode(rt.model(x, w), x, w) == ref
    assert [r.text for r in rt.read_batch(x, w)] == ref
    for r, q in zip(rt.read_batch(x, w), agent.read_batch(x, w)):  # beam confidences: teacher-forced steps
        assert np.allclose(r.confidences, q.confidences, atol=1e-4)
    assert rt.decoder == agent.decoder and rt.lm is lm
    assert isinstance(rt, type(agent))


@needs_onnx
@pytest.mark.parametrize("name", [_preset(n) for n in yolo_cfgs])
def test_detector_export_holds_parity(name, tmp_path):
    from dawnet.ocr.onnx import export_onnx, load

    agent = _detector(name)
    result = export_onnx(agent, tmp_path / "det.onnx")
    assert result.parity["max_abs"] <= TOL
    det = load(tmp_path / "det.onnx")
    m = det.metadata
    assert (m["size"], m["stride"], m["score_threshold"], m["iou_threshold"], m["max_det"]) == (
        256, agent.stride, agent.score_threshold, agent.iou_threshold, agent.max_det)
    assert m["vote_threshold"] == agent.vote_threshold and m["kind"] == "detector"
    page = _page()
    ref = agent.infer(page)
    got = det.infer(page)
    assert len(ref["boxes"]) > 0 and ref["boxes"].shape == got["boxes"].shape
    assert float((ref["boxes"] - got["boxes"]).abs().max()) <= 0.5
    assert torch.allclose(ref["scores"], got["scores"], atol=1e-4)
    x = torch.rand(3, 1, 256, 256, generator=torch.Generator().manual_seed(1))  # dynamic batch
    with torch.no_grad():
        assert float((det.forward(x) - agent.model(x)).abs().max()) <= TOL


@needs_onnx
def test_read_page_runs_on_onnx_objects(tmp_path):
    from dawnet.ocr.onnx import export_onnx, load
    from dawnet.ocr.page import read_page

    det, rec = _detector(), _recognizer("crnn")
    export_onnx(det, tmp_path / "det.onnx")
    export_onnx(rec, tmp_path / "rec.onnx")
    page = Image.new("L", (320, 200), 240)
    for y in (40, 120):
        ImageDraw.Draw(page).text((20, y), "a line of text here", fill=10)
    ref = read_page(page, det, rec)
    got = read_page(page, load(tmp_path / "det.onnx"), load(tmp_path / "rec.onnx"))
    assert [ln.text for ln in got.lines] == [ln.text for ln in ref.lines]
    assert len(got.lines) == len(ref.lines) > 0


# -- options: int8, fp16, opset ---------------------------------------------------------------------------------

@needs_onnx
def test_int8_export_is_smaller_records_its_difference_and_reads(tmp_path):
    from dawnet.ocr.onnx import export_onnx, load

    agent = _recognizer("crnn")
    fp32 = export_onnx(agent, tmp_path / "fp32.onnx")
    q = export_onnx(agent, tmp_path / "int8.onnx", quantize="int8")
    assert q.metadata["dtype"] == "int8" and q.metadata["parity"]["dtype"] == "int8"
    assert q.files[0].stat().st_size < 0.9 * fp32.files[0].stat().st_size
    assert 0 < q.parity["max_abs"] < 0.5  # not exact, and the measured difference is recorded
    rt = load(tmp_path / "int8.onnx")
    assert rt.dtype == "int8" and isinstance(rt.infer(_line_image()), str)


@needs_onnx
def test_fp16_is_kept_only_where_parity_holds(tmp_path):
    pytest.importorskip("onnxconverter_common")
    from dawnet.ocr.onnx import export_onnx, load

    det = export_onnx(_detector(), tmp_path / "det16.onnx", fp16=True)
    assert det.metadata["dtype"] == "float16" and det.parity["max_abs"] <= 2e-2
    assert load(tmp_path / "det16.onnx").dtype == "float16"
    with pytest.raises(ValueError, match="without --fp16"):
        export_onnx(_recognizer("crnn"), tmp_path / "rec16.onnx", fp16=True)
    assert not (tmp_path / "rec16.onnx").exists()  # a refused export leaves nothing behind


@needs_onnx
def test_options_are_checked(tmp_path):
    from dawnet.ocr.onnx import export_onnx

    agent = _recognizer("crnn_small")
    with pytest.raises(ValueError, match="opset"):
        export_onnx(agent, tmp_path / "a.onnx", opset=9)
    with pytest.raises(ValueError, match="int8"):
        export_onnx(agent, tmp_path / "a.onnx", quantize="int4")
    with pytest.raises(ValueError, match="not both"):
        export_onnx(agent, tmp_path / "a.onnx", quantize="int8", fp16=True)
    r = export_onnx(agent, tmp_path / "a.onnx", opset=14)
    assert r.metadata["opset"] == 14
    import onnx

    assert onnx.load(str(tmp_path / "a.onnx")).opset_import[0].version == 14


# -- command line -------------------------------------------------------------------------------------------

@needs_onnx
def test_export_command_writes_both_attention_files(tmp_path, capsys):
    from dawnet.cli import main
    from dawnet.ocr.onnx import load

    agent = _recognizer("attn")
    agent.save(tmp_path / "attn.pt")
    assert main(["export", str(tmp_path / "attn.pt"), "--out", str(tmp_path / "attn.onnx"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert sorted(out["files"]) == [str(tmp_path / "attn.decoder.onnx"), str(tmp_path / "attn.onnx")]
    assert out["parity"]["max_abs"] <= TOL and out["metadata"]["decoder_file"] == "attn.decoder.onnx"
    dec = (tmp_path / "attn.decoder.onnx").read_bytes()
    assert out["metadata"]["decoder_sha256"] == hashlib.sha256(dec).hexdigest()
    image = _line_image("abc")
    assert load(tmp_path / "attn.onnx").infer(image) == agent.infer(image)


def test_export_command_imports_no_torch():
    import subprocess

    code = ("import sys, dawnet.commands.export as e, argparse; p = argparse.ArgumentParser(); "
            "e.register(p.add_subparsers()); print('torch' in sys.modules, 'onnx' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# -- bad input ----------------------------------------------------------------------------------------------

@needs_onnx
def test_foreign_onnx_file_is_refused_with_the_fix(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from dawnet.ocr.onnx import OnnxFileError, load

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8  # what onnxruntime reads, whatever onnx version wrote it
    onnx.save(model, str(tmp_path / "f.onnx"))
    with pytest.raises(OnnxFileError, match="without dawnet metadata.*dawnet export CHECKPOINT --out") as e:
        load(tmp_path / "f.onnx")
    assert "\n" not in str(e.value)


@needs_onnx
def test_corrupt_and_missing_files_get_one_line_errors(tmp_path):
    from dawnet.ocr.onnx import OnnxFileError, export_onnx, load

    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07this is not a protobuf" * 10)
    with pytest.raises(OnnxFileError, match="not a readable ONNX model.*re-export") as e:
        load(tmp_path / "junk.onnx")
    assert "\n" not in str(e.value)
    export_onnx(_recognizer("crnn_small"), tmp_path / "ok.onnx")
    data = (tmp_path / "ok.onnx").read_bytes()
    (tmp_path / "cut.onnx").write_bytes(data[: len(data) // 2])  # a truncated download
    with pytest.raises(OnnxFileError, match="not a readable ONNX model"):
        load(tmp_path / "cut.onnx")
    with pytest.raises(FileNotFoundError, match="dawnet export"):
        load(tmp_path / "nope.onnx")
    _recognizer("crnn_small").save(tmp_path / "c.pt")
    with pytest.raises(OnnxFileError, match="is a PyTorch checkpoint, not an ONNX file: export it with 'dawnet export"):
        load(tmp_path / "c.pt")


@needs_onnx
def test_wrong_kind_and_broken_attention_pairs_are_named(tmp_path):
    from dawnet.ocr.onnx import OnnxFileError, export_onnx, load, load_detector, load_recognizer

    export_onnx(_recognizer("attn_small"), tmp_path / "a.onnx")
    with pytest.raises(OnnxFileError, match="decoder step.*'a.onnx'"):
        load(tmp_path / "a.decoder.onnx")
    with pytest.raises(OnnxFileError, match="holds a line recognizer, not the text-line detector"):
        load_detector(tmp_path / "a.onnx")
    dec = tmp_path / "a.decoder.onnx"
    data = dec.read_bytes()
    dec.write_bytes(data + b"\x00")  # changed after export
    with pytest.raises(OnnxFileError, match="sha256"):
        load_recognizer(tmp_path / "a.onnx")
    dec.unlink()
    with pytest.raises(FileNotFoundError, match="decoder step .* is missing"):
        load_recognizer(tmp_path / "a.onnx")


@needs_onnx
def test_runtime_rejects_bad_line_tensors(tmp_path):
    from dawnet.ocr.onnx import export_onnx, load

    export_onnx(_recognizer("crnn_small"), tmp_path / "r.onnx")
    rt = load(tmp_path / "r.onnx")
    with pytest.raises(ValueError, match="reads lines 32 px high, got 48"):
        rt.model(torch.rand(1, 1, 48, 100))
    with pytest.raises(ValueError, match="widths must be"):
        rt.model(torch.rand(2, 1, 32, 100), torch.tensor([100, 101]))


def test_missing_onnxruntime_names_the_install(monkeypatch, tmp_path):
    from dawnet.cli import main
    from dawnet.ocr.onnx import load

    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import onnxruntime now raises ImportError
    fix = r"'onnxruntime' package, which is not installed: pip install 'dawnet\[onnx\]'"
    with pytest.raises(ImportError, match=fix):
        load(tmp_path / "x.onnx")
    torch.manual_seed(0)
    agent = _recognizer("crnn_small")
    agent.save(tmp_path / "c.pt")
    assert main(["export", str(tmp_path / "c.pt"), "--out", str(tmp_path / "c.onnx")]) == 2


# -- CTC prefix beam search: vectorized == reference ------------------------------------------------------------

def _peaky(lines, steps, classes, seed):
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(lines, steps, classes))
    best = rng.integers(0, classes, size=(lines, steps))
    best[:, ::2] = 0
    np.put_along_axis(logits, best[..., None], 6.0, axis=-1)
    return torch.from_numpy(logits).float().log_softmax(-1)


@pytest.fixture(scope="module")
def lm():
    rng = np.random.default_rng(0)
    texts = ["".join(rng.choice(list(CS.chars), size=int(rng.integers(5, 25)))) for _ in range(300)]
    return CharNgramLM.train(texts + ["the cat sat on the mat", "hello world"], order=4, vocab=CS.chars)


@pytest.mark.parametrize("beam", [1, 3, 10])
@pytest.mark.parametrize("fusion", ["none", "lm", "bonus"])
def test_vectorized_beam_search_equals_the_reference(beam, fusion, lm):
    lp = torch.cat([_peaky(12, 40, CS.num_ctc_classes, 1), torch.randn(6, 40, CS.num_ctc_classes,
                    generator=torch.Generator().manual_seed(2)).log_softmax(-1)])  # peaky and flat lines
    lengths = torch.tensor([40, 33, 1, 17] + [40] * 14)
    kw = {"none": {}, "lm": {"lm": lm, "charset": CS, "lm_weight": 0.7, "bonus": 1.5},
          "bonus": {"bonus": 0.8}}[fusion]
    got = D.ctc_beam_search(lp, lengths, beam=beam, **kw)
    arr = lp.double().numpy()
    want = [D.ctc_prefix_beam_search_reference(arr[i, :int(lengths[i])], beam, **kw) for i in range(len(arr))]
    assert got == want
    assert any(len(w) > 3 for w in want)


def test_vectorized_beam_search_without_pruning_equals_the_reference(lm):
    lp = torch.randn(5, 12, 6, generator=torch.Generator().manual_seed(4)).log_softmax(-1).double().numpy()
    cs = Charset("abcde")
    small = CharNgramLM.train(["abc", "bad", "cab", "ace"], order=3, vocab=cs.chars)
    for kw in ({}, {"lm": small, "charset": cs, "lm_weight": 0.5, "bonus": 0.3}):
        for a in lp:
            assert D.ctc_prefix_beam_search(a, 8, prune=None, **kw) == D.ctc_prefix_beam_search_reference(
                a, 8, prune=None, **kw)


def test_lm_cache_is_shared_and_keyed_by_weight(lm):
    lp = _peaky(4, 30, CS.num_ctc_classes, 7).numpy()
    cache: dict = {}
    kw = {"lm": lm, "charset": CS, "bonus": 1.0}
    a = [D.ctc_prefix_beam_search(x, 5, lm_weight=0.5, lm_cache=cache, **kw) for x in lp]
    b = [D.ctc_prefix_beam_search(x, 5, lm_weight=2.0, lm_cache=cache, **kw) for x in lp]
    assert len(cache) == 2  # one table per (LM, weight, charset)
    assert a == [D.ctc_prefix_beam_search_reference(x, 5, lm_weight=0.5, **kw) for x in lp]
    assert b == [D.ctc_prefix_beam_search_reference(x, 5, lm_weight=2.0, **kw) for x in lp]
