"""``dawnet train`` runs: a folder holding another run is refused, changed options are applied in a stated way
or refused, data are checked before the first step, divergence and bad ranges are one-line errors."""

import json

import pytest

from dawnet import cli
from dawnet.ocr.data.fonts import find_fonts
from dawnet.ocr.data.formats import write_folder
from dawnet.ocr.data.synth import LineSynthesizer

TEXTS = ["hello", "world 42", "dawnet", "ocr line"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A built-style folder: 4 rendered training lines, 2 validation lines."""
    fonts = [f for f in find_fonts() if f.covers("".join(TEXTS) + "é")][:1]
    synth = LineSynthesizer(fonts)
    images = [synth.render(t, seed=i).image for i, t in enumerate(TEXTS)]
    root = tmp_path_factory.mktemp("lines")
    write_folder(list(zip(images, TEXTS)), root / "data" / "train")
    write_folder(list(zip(images[:2], TEXTS[:2])), root / "data" / "val")
    write_folder(list(zip(images[:2], ["hellé", "world 42"])), root / "accented")
    write_folder(list(zip(images, ["ab", "cd", "ef", "gh"])), root / "other" / "train")
    return root


def _train(data, out, *extra, model="crnn_small", source=None):
    return cli.main(["train", model, "--data", str(source or data / "data"), "--out", str(out), "--workers", "0",
                     "--batch-size", "2", "--json", *extra])


def _summary(capsys) -> dict:
    return json.loads(capsys.readouterr().out)  # with --json, standard output is exactly one JSON document


def _error(capsys) -> str:
    """The one error line (progress bars may come before it on stderr)."""
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    return err.splitlines()[-1]


def test_another_model_data_or_option_in_out_is_refused_with_the_fix(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(data, out, "--steps", "2") == 0
    assert _summary(capsys)["steps"] == 2
    record = json.loads((out / "run.json").read_text())
    assert record["model"] == "crnn_small" and record["data"] == "data" and record["schedule_steps"] == 2
    assert record["options"] == {"batch_size": 2, "lr": 0.001, "grad_clip": 5.0, "seed": 0, "augment": False,
                                 "train_lines": None}
    before = (out / "last.pt").read_bytes()

    assert _train(data, out, "--steps", "3", model="attn_small") == 2
    assert _error(capsys) == (f"dawnet: error: {out} holds a crnn_small run, not attn_small: pass another --out "
                              "to train attn_small, or train crnn_small to resume it")
    assert _train(data, out, "--steps", "3", source=data / "other") == 2
    assert _error(capsys) == (f"dawnet: error: {out} holds a run on data, not other: pass another --out for this "
                              f"data, or --data {data / 'data'} to resume the run")
    assert (out / "last.pt").read_bytes() == before  # nothing was resumed


def test_a_new_lr_without_more_steps_is_refused_not_ignored(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(data, out, "--steps", "2") == 0
    capsys.readouterr()
    before = (out / "last.pt").read_bytes()
    assert _train(data, out, "--steps", "2", "--lr", "0.01") == 2
    assert _error(capsys) == ("dawnet: error: --lr 0.01 differs from this run's 0.001: a resumed run keeps its "
                              "schedule; omit --lr to resume, or give a total past step 2 (--steps or --epochs) to "
                              "add a new phase that peaks at --lr")
    assert _train(data, out, "--steps", "2", "--batch-size", "4") == 2  # --batch-size 4 after _train's 2
    assert "a resumed run keeps its options" in _error(capsys)
    assert _train(data, out, "--steps", "2", "--augment") == 2
    assert _error(capsys).endswith("this run trained without --augment: resume it without --augment, or pass "
                                   "another --out")
    assert (out / "last.pt").read_bytes() == before  # nothing was trained by the refused calls


def test_more_steps_than_the_finished_schedule_add_a_new_one_cycle_phase(data, tmp_path, capsys):
    from dawnet.agent import Agent

    out = tmp_path / "run"
    assert _train(data, out, "--steps", "4") == 0
    capsys.readouterr()
    assert _train(data, out, "--steps", "8", "--lr", "0.002") == 0
    printed = capsys.readouterr()
    assert ("8 steps asked for, past this run's schedule, which ends at step 4: adding a new one-cycle phase of 4 "
            "steps after it (lr 0.0002 -> 0.002 -> 2e-06)\n") in printed.err  # notes go to stderr with --json
    assert json.loads(printed.out)["steps"] == 8
    record = json.loads((out / "run.json").read_text())
    assert record["schedule_steps"] == 4 and record["phases"] == [{"from_step": 4, "steps": 4, "lr": 0.002}]
    lrs = [s["lr"] for s in Agent.load(out / "last.pt").history.steps]
    # steps 1-4: the first schedule (1 step up to 1e-3, 2 annihilating to 1e-6); steps 5-8: the same shape again,
    # from 2e-4 up to the new --lr 2e-3 and down to 2e-6 (never the old schedule's final 1e-6 for the extra steps)
    assert lrs[:4] == pytest.approx([1e-4, 1e-3, 5.05e-5, 1e-6])
    assert lrs[4:] == pytest.approx([2e-4, 2e-3, 1.01e-4, 2e-6])
    # the extended run resumes with its own phases: a run that is done says so and trains nothing
    assert _train(data, out, "--steps", "8") == 0
    assert "is already at step 8, which reaches the total of 8 steps: nothing to train" in capsys.readouterr().err


def test_validation_characters_outside_the_charset_fail_before_the_first_step(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(data, out, "--steps", "2", "--val", str(data / "accented")) == 2
    assert _error(capsys) == (f"dawnet: error: --val {data / 'accented'} holds 1 character(s) that the training "
                              "data never shows ('é' (U+00E9)): add training lines with them, or remove those "
                              "lines from the validation data")
    assert not (out / "last.pt").exists()


def test_divergence_is_one_line_and_says_what_was_kept(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(data, out, "--steps", "3", "--lr", "1e9") == 2  # before any epoch ends: nothing saved
    assert _error(capsys) == ("dawnet: error: training diverged after step 2 (the loss or the weights became NaN/inf "
                              "at lr 1e+09): lower --lr, or find one with 'dawnet lr-find'; nothing was saved")
    assert not (out / "last.pt").exists()
    # partial work: a run with a checkpoint diverges in a new phase -> exit 1, the checkpoint is kept
    assert _train(data, out, "--steps", "2") == 0
    capsys.readouterr()
    before = (out / "last.pt").read_bytes()
    assert _train(data, out, "--steps", "6", "--lr", "1e9") == 1
    assert _error(capsys) == (f"dawnet: error: training diverged after step 4 (the loss or the weights became "
                              f"NaN/inf at lr 1e+09): lower --lr, or find one with 'dawnet lr-find'; {out / 'last.pt'} "
                              "keeps the last checkpoint saved before that")
    assert (out / "last.pt").read_bytes() == before


@pytest.mark.parametrize("option, value, message", [
    ("--height", "0", "argument --height: must be an integer >= 16 and <= 128, got 0"),
    ("--minutes", "-1", "argument --minutes: must be a finite number > 0, got -1"),
    ("--lr", "nan", "argument --lr: must be a finite number > 0, got nan"),
    ("--steps", "0", "argument --steps: must be an integer >= 1, got 0"),
])
def test_out_of_range_options_are_refused_before_any_work(data, tmp_path, capsys, option, value, message):
    with pytest.raises(SystemExit) as e:
        _train(data, tmp_path / "run", option, value)
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(message)
    assert not (tmp_path / "run").exists()


def test_a_run_from_before_run_json_is_checked_from_its_checkpoint(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(data, out, "--steps", "2", "--lr", "0.002") == 0
    (out / "run.json").unlink()
    capsys.readouterr()
    assert _train(data, out, "--steps", "2", model="attn_small") == 2
    assert _error(capsys) == (f"dawnet: error: {out} holds a crnn_small run, not attn_small: pass another --out "
                              "to train attn_small, or train crnn_small to resume it")
    assert _train(data, out, "--steps", "2", "--lr", "0.01") == 2
    assert _error(capsys).startswith("dawnet: error: --lr 0.01 differs from this run's 0.002: ")
    assert _train(data, out, "--steps", "2", "--lr", "0.002") == 0  # its own lr, read from the schedule
    assert "nothing to train" in capsys.readouterr().err


def test_blank_training_lines_are_counted_and_reported(data, tmp_path, capsys):
    """A white image (e.g. a scan read wrong) teaches nothing: train says how many there are before training."""
    from PIL import Image


    root = tmp_path / "blanky"
    images = [Image.open(p).copy() for p in sorted((data / "data" / "train").glob("*.png"))]
    white = Image.new("L", images[0].size, 255)
    write_folder([(images[0], TEXTS[0]), (white, TEXTS[1]), (images[2], TEXTS[2]), (white, TEXTS[3])],
                 root / "train")
    write_folder([(images[0], TEXTS[0]), (white, TEXTS[1])], root / "val")
    assert _train(data, tmp_path / "run", "--steps", "1", source=root) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert (summary["blank_train_lines"], summary["blank_val_lines"]) == (2, 1)
    notes = [line for line in captured.err.splitlines() if "blank (no ink)" in line]
    assert notes[0].startswith("2 of 4 train lines are blank (no ink), e.g. ")
    assert notes[1].startswith("1 of 2 val lines are blank (no ink), e.g. ")

    write_folder([(white, t) for t in TEXTS], tmp_path / "white" / "train")
    assert _train(data, tmp_path / "run2", "--steps", "1", source=tmp_path / "white") == 2
    assert _error(capsys).startswith("dawnet: error: every one of the 4 training lines is blank (no ink), e.g. ")
