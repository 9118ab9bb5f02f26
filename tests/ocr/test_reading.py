"""dawnet.ocr.reading: load a recognizer checkpoint, set its decoder, read and score line data."""

import gzip

import pytest
import torch
from PIL import Image

import dawnet.ocr.models  # noqa: F401  (registers the presets)
from dawnet.agent import Agent
from dawnet.checkpoint import CheckpointError
from dawnet.ocr.agents import CTCAgent
from dawnet.ocr.charset import Charset
from dawnet.ocr.data.datasets import LineDataset
from dawnet.ocr.data.fonts import find_fonts
from dawnet.ocr.data.formats.records import LineRecord
from dawnet.ocr.data.synth import LineSynthesizer
from dawnet.ocr.lm import CharNgramLM
from dawnet.ocr.metrics import text_metrics
from dawnet.ocr.reading import configure_decoder, evaluate_lines, load_recognizer
from dawnet.registry import create_model, register_model

TEXTS = ["hello", "world 42", "dawnet", "ocr line", "read me"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """Five rendered lines as a LineDataset (real files), and a CTC agent trained one step on them."""
    root = tmp_path_factory.mktemp("lines")
    synth = LineSynthesizer([f for f in find_fonts() if f.covers("".join(TEXTS))][:1])
    records = []
    for i, t in enumerate(TEXTS):
        path = root / f"{i}.png"
        synth.render(t, seed=i).image.save(path)
        records.append(LineRecord(text=t, path=str(path), source=f"line{i}"))
    cs = Charset.from_texts(TEXTS)
    torch.manual_seed(0)
    model = create_model("crnn_small", num_classes=cs.num_ctc_classes)
    agent = CTCAgent(model, torch.optim.Adam(model.parameters(), 3e-3), charset=cs, device="cpu")
    return root, records, agent


def test_load_recognizer_reads_back_the_agent_and_refuses_other_files(tmp_path, data):
    _, _, agent = data
    agent.save(tmp_path / "rec.pt")
    back = load_recognizer(tmp_path / "rec.pt")
    assert type(back) is CTCAgent and back.charset == agent.charset
    with gzip.open(tmp_path / "lm.json.gz", "wt") as f:
        f.write("{}")
    with pytest.raises(ValueError, match="is a gzip file .*not a recognizer checkpoint"):
        load_recognizer(tmp_path / "lm.json.gz")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "plain.pt")
    with pytest.raises(CheckpointError, match="plain.pt is not a dawnet checkpoint"):
        load_recognizer(tmp_path / "plain.pt")

    @register_model("linear_for_reading_tests")
    def _linear():
        return torch.nn.Linear(2, 2)

    net = create_model("linear_for_reading_tests")
    Agent(net, torch.optim.SGD(net.parameters(), 0.1), device="cpu").save(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="holds a Agent .*not a text-line recognizer"):
        load_recognizer(tmp_path / "other.pt")
    with pytest.raises(FileNotFoundError):
        load_recognizer(tmp_path / "missing.pt")


def test_configure_decoder_defaults_with_and_without_an_lm(tmp_path, data):
    _, _, agent = data
    configure_decoder(agent)
    assert (agent.decoder.beam, agent.decoder.lm_weight, agent.decoder.bonus, agent.greedy) == (1, 0.0, 0.0, True)
    lm = CharNgramLM.train(TEXTS, order=3, vocab=agent.charset.chars)
    lm.save(tmp_path / "lm.json.gz")
    configure_decoder(agent, tmp_path / "lm.json.gz", lm_weight=0.4)
    assert (agent.decoder.beam, agent.decoder.lm_weight, agent.decoder.bonus) == (10, 0.4, 1.0)
    configure_decoder(agent, tmp_path / "lm.json.gz", beam=3, bonus=0.0)
    assert (agent.decoder.beam, agent.decoder.bonus) == (3, 0.0)
    with pytest.raises(ValueError, match="--beam must be >= 1, got 0"):
        configure_decoder(agent, beam=0)
    with pytest.raises(FileNotFoundError):
        configure_decoder(agent, tmp_path / "nope.json.gz")
    agent.lm = None
    configure_decoder(agent)  # back to greedy for the other tests


def test_evaluate_lines_scores_what_read_reads_and_reports_blank_lines(tmp_path, data):
    root, records, agent = data
    configure_decoder(agent)
    blank, faint = tmp_path / "blank.png", tmp_path / "faint.png"
    Image.new("L", (120, 32), 255).save(blank)
    im = Image.new("L", (120, 32), 250)
    im.paste(244, (10, 10, 30, 20))  # 6 levels of "ink": within dawnet.images.is_blank's tolerance
    im.save(faint)
    ds = LineDataset([*records, LineRecord(text="nothing", path=str(blank), source="blank-line"),
                      LineRecord(text="faint", path=str(faint), source="faint-line")], height=32)
    result = evaluate_lines(agent, ds, batch_size=2, progress=False)
    hyps = [r.text for r in agent.read([r.path for r in records])]
    expected = text_metrics(TEXTS, hyps)
    assert {k: result[k] for k in expected} == expected
    assert result["lines"] == 5 and sorted(result["blank"]) == ["blank-line", "faint-line"]
    assert sorted(result["pairs"]) == sorted(zip([f"line{i}" for i in range(5)], TEXTS, hyps))
    assert result["lines_per_s"] > 0
