"""`dawnet eval` and `dawnet read`: option ranges, exactly one JSON document, blank lines counted, exit codes."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image, ImageDraw

import dawnet.ocr.models  # noqa: F401  (registers the presets)
from dawnet.cli import main
from dawnet.ocr.agents import CTCAgent
from dawnet.ocr.charset import Charset
from dawnet.ocr.data.formats import write_folder
from dawnet.registry import create_model

TEXTS = ["hello", "world 42", "dawnet", "ocr line"]


def _line(text: str) -> Image.Image:
    """A dark-on-white line image (any ink will do: the untrained model's reading is not what is tested)."""
    im = Image.new("L", (12 * len(text) + 8, 32), 255)
    ImageDraw.Draw(im).text((4, 8), text, fill=0)
    return im


@pytest.fixture(scope="module")
def model_and_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("eval")
    torch.manual_seed(0)
    cs = Charset.from_texts(TEXTS)
    model = create_model("crnn_small", num_classes=cs.num_ctc_classes)
    CTCAgent(model, torch.optim.Adam(model.parameters(), 1e-3), charset=cs, device="cpu").save(root / "m.pt")
    write_folder([(_line(t), t) for t in TEXTS], root / "data")
    blank = root / "blank"
    write_folder([(_line(t), t) for t in TEXTS[:3]] + [(Image.new("L", (90, 32), 255), "ocr line")], blank)
    return root / "m.pt", root / "data", blank


def _usage_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    return capsys.readouterr().err.strip().splitlines()[-1]


@pytest.mark.parametrize("option, value, message", [
    ("--limit", "-1", "argument --limit: must be an integer >= 1, got -1"),
    ("--limit", "0", "argument --limit: must be an integer >= 1, got 0"),
    ("--lm-weight", "nan", "argument --lm-weight: must be a finite number >= 0, got nan"),
    ("--lm-weight", "-0.5", "argument --lm-weight: must be a finite number >= 0, got -0.5"),
    ("--bonus", "inf", "argument --bonus: must be a finite number, got inf"),
    ("--beam", "0", "argument --beam: must be an integer >= 1, got 0"),
    ("--batch-size", "0", "argument --batch-size: must be an integer >= 1, got 0"),
    ("--errors", "-2", "argument --errors: must be an integer >= 0, got -2"),
    ("--threads", "two", "argument --threads: must be an integer >= 1, got 'two'"),
])
def test_eval_refuses_options_out_of_range(capsys, option, value, message):
    assert _usage_error(capsys, ["eval", "m.pt", "--data", "d", option, value]) == f"dawnet eval: error: {message}"


@pytest.mark.parametrize("option, value, message", [
    ("--lm-weight", "nan", "argument --lm-weight: must be a finite number >= 0, got nan"),
    ("--beam", "-3", "argument --beam: must be an integer >= 1, got -3"),
])
def test_read_refuses_options_out_of_range(capsys, option, value, message):
    assert _usage_error(capsys, ["read", "m.pt", "l.png", option, value]) == f"dawnet read: error: {message}"


def test_eval_limit_reads_exactly_that_many_lines(model_and_data, capsys):
    ckpt, data, _ = model_and_data
    assert main(["eval", str(ckpt), "--data", str(data), "--limit", "3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["lines"] == 3


def test_eval_json_with_errors_is_exactly_one_json_document(model_and_data, capsys):
    ckpt, data, _ = model_and_data
    assert main(["eval", str(ckpt), "--data", str(data), "--json", "--errors", "2"]) == 0
    out = capsys.readouterr().out
    result = json.loads(out)  # raises on anything after the object ("Extra data")
    assert out.endswith("}\n") and out.count("\n") == 1
    assert result["lines"] == 4 and result["blank_lines"] == 0 and result["blank"] == []
    assert len(result["errors"]) == 2
    assert {e["ref"] for e in result["errors"]} <= set(TEXTS)
    assert [set(e) for e in result["errors"]] == [{"source", "ref", "hyp", "edits"}] * 2
    assert result["errors"][0]["edits"] >= result["errors"][1]["edits"]


def test_eval_text_errors_lists_the_worst_lines(model_and_data, capsys):
    ckpt, data, _ = model_and_data
    assert main(["eval", str(ckpt), "--data", str(data), "--errors", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[0].startswith("4 lines  CER ")
    assert out[2].startswith("  ref: ") and out[3].startswith("  hyp: ")


def test_eval_counts_and_names_a_blank_line_instead_of_scoring_it(model_and_data, capsys):
    ckpt, _, blank = model_and_data
    assert main(["eval", str(ckpt), "--data", str(blank), "--json"]) == 1
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["lines"] == 3 and result["blank_lines"] == 1
    assert result["blank"] == [f"{blank}/000003.gt.txt:1"]  # where the line came from, as in "errors"
    assert err == ("dawnet eval: 1 blank line image(s) (every pixel the same value) not scored: "
                   f"{blank}/000003.gt.txt:1\n")


def test_eval_on_nothing_but_blank_lines_is_bad_input(model_and_data, tmp_path, capsys):
    ckpt, _, _ = model_and_data
    write_folder([(Image.new("L", (60, 32), 255), "hello"), (Image.new("L", (70, 32), 0), "world")], tmp_path)
    assert main(["eval", str(ckpt), "--data", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.splitlines()[-1] == (f"dawnet: error: all 2 lines of {tmp_path} are blank images (every "
                                             "pixel the same value): nothing to score; check that the images hold "
                                             "the text lines")


def test_read_and_eval_with_the_onnx_runtime_match_torch(model_and_data, tmp_path, capsys):
    pytest.importorskip("onnxruntime", reason="--runtime onnx runs the graph with ONNX Runtime")
    from dawnet.ocr.onnx import export_onnx

    ckpt, data, _ = model_and_data
    export_onnx(str(ckpt), tmp_path / "m.onnx")
    image = sorted(data.glob("*.png"))[0]
    assert main(["read", str(ckpt), str(image)]) == 0
    torch_text = capsys.readouterr().out
    assert main(["read", "--runtime", "onnx", str(tmp_path / "m.onnx"), str(image)]) == 0
    assert capsys.readouterr().out == torch_text
    assert main(["eval", str(ckpt), "--data", str(data), "--json"]) == 0
    torch_result = json.loads(capsys.readouterr().out)
    assert main(["eval", "--runtime", "onnx", str(tmp_path / "m.onnx"), "--data", str(data), "--json"]) == 0
    onnx_result = json.loads(capsys.readouterr().out)
    assert (onnx_result["lines"], onnx_result["cer"]) == (torch_result["lines"], torch_result["cer"])


def test_read_pages_needs_a_recognizer_and_a_page(model_and_data, capsys):
    ckpt, _, _ = model_and_data
    assert main(["read", "--detector", "det.pt", str(ckpt)]) == 2
    assert capsys.readouterr().err == ("dawnet: error: page reading needs a recognizer and at least one page: "
                                       "dawnet read --detector DET.pt --recognizer REC.pt PAGE.png [PAGE.png ...]\n")


def test_read_pages_with_a_detector(model_and_data, tmp_path, capsys):
    from dawnet.ocr.detection import DetectionAgent
    from dawnet.ocr.models.yolo import yolo

    ckpt, _, _ = model_and_data
    m = yolo(size=320)
    DetectionAgent(m, torch.optim.SGD(m.parameters(), 0.1), size=320, score_threshold=0.0,
                   device="cpu").save(tmp_path / "det.pt")
    page = Image.new("L", (320, 240), 255)
    for y in (30, 100, 170):
        ImageDraw.Draw(page).text((20, y), "ocr line", fill=0)
    page.save(tmp_path / "page.png")
    code = main(["read", "--detector", str(tmp_path / "det.pt"), "--recognizer", str(ckpt), "--json",
                 str(tmp_path / "page.png")])
    out = capsys.readouterr().out
    assert code == 0 and out.count("\n") == 1  # one JSON object per page
    result = json.loads(out)
    assert result["image"] == str(tmp_path / "page.png")
    assert result["text"] == "\n".join(line["text"] for line in result["lines"])
