"""Recording feature maps during training with a real Agent: content, size bound, resume, figures."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from matplotlib.figure import Figure
from PIL import Image

import dawnet
from dawnet.diagnose.probe import capture
from dawnet.diagnose.record import FeatureRecorder, Recording, animate, plot_evolution
from toy import loader, make_agent, quadrant_data

LAYERS = ["features.0", "features.4"]


def probe_images(n: int = 3) -> torch.Tensor:
    return quadrant_data(n, seed=5).tensors[0]


def test_records_init_every_n_steps_and_final(tmp_path):
    path = tmp_path / "rec.bin"
    inputs = probe_images()
    agent = make_agent()
    init, _ = capture(agent.model, LAYERS, inputs)
    rec_cb = FeatureRecorder(path, inputs, LAYERS, every=4, channels={"features.4": [1, 5, 7]})
    agent.callbacks.append(rec_cb)
    agent.fit(loader(), steps=10, progress=False)
    rec = Recording(path)
    assert rec.steps == [0, 4, 8, 10]
    assert rec.shapes == {"features.0": (3, 8, 12, 12), "features.4": (3, 3, 6, 6)}
    first, last = rec.snapshot(0), rec.snapshot(len(rec) - 1)
    assert first["features.0"].dtype == np.float16
    np.testing.assert_allclose(first["features.0"], init["features.0"].numpy(), atol=2e-3, rtol=2e-3)
    final, _ = capture(agent.model, LAYERS, inputs)
    np.testing.assert_allclose(last["features.4"], final["features.4"][:, [1, 5, 7]].numpy(), atol=2e-3, rtol=2e-3)
    assert not np.allclose(first["features.0"], last["features.0"])  # training changed the maps
    ev = rec.evolution("features.4", image=2, channel=1)
    assert ev.shape == (4, 6, 6)
    np.testing.assert_array_equal(ev[-1], last["features.4"][2, 1])
    assert rec.channel_ids("features.4") == [1, 5, 7]
    np.testing.assert_allclose(rec.inputs.astype(np.float32), inputs.numpy(), atol=1e-3)


def test_file_stays_under_max_bytes_and_spans_the_run(tmp_path):
    path = tmp_path / "small.rec"
    inputs = probe_images(2)
    one = 2 * (2 * 8 * 12 * 12)  # float16 bytes of one snapshot of features.0
    budget = 8 * one + 2000
    agent = make_agent()
    cb = FeatureRecorder(path, inputs, ["features.0"], every=1, max_bytes=budget)
    agent.callbacks.append(cb)
    agent.fit(loader(), steps=40, progress=False)
    rec = Recording(path)
    assert path.stat().st_size <= budget
    assert rec.steps[0] == 0 and rec.steps[-1] == 40
    assert cb.every > 1 and len(rec) <= 9
    assert rec.steps == sorted(set(rec.steps))


def test_truncated_file_reads_complete_records(tmp_path):
    path = tmp_path / "t.rec"
    agent = make_agent()
    agent.callbacks.append(FeatureRecorder(path, probe_images(), LAYERS, every=5))
    agent.fit(loader(), steps=10, progress=False)
    n = len(Recording(path))
    data = path.read_bytes()
    path.write_bytes(data[:-100])  # a crash in the middle of the last write
    with pytest.warns(UserWarning, match="truncated"):
        rec = Recording(path)
    assert len(rec) == n - 1
    bad = tmp_path / "bad.rec"
    bad.write_bytes(b"not a recording")
    with pytest.raises(ValueError, match="magic"):
        Recording(bad)


def test_resume_from_checkpoint_continues_the_recording(tmp_path):
    path, ckpt = tmp_path / "r.rec", tmp_path / "a.pt"
    inputs = probe_images()
    agent = make_agent()
    agent.callbacks.append(FeatureRecorder(path, inputs, LAYERS, every=3))
    agent.fit(loader(), steps=7, progress=False)
    agent.save(ckpt)
    assert Recording(path).steps == [0, 3, 6, 7]
    resumed = dawnet.Agent.load(ckpt, callbacks=[FeatureRecorder(path, inputs, LAYERS, every=3)])
    resumed.fit(loader(), steps=13, progress=False)
    assert Recording(path).steps == [0, 3, 6, 7, 9, 12, 13]
    # a fresh run must not silently append to a longer recording
    fresh = make_agent()
    fresh.callbacks.append(FeatureRecorder(path, inputs, LAYERS, every=3))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        fresh.fit(loader(), steps=2, progress=False)
    fresh.callbacks[-1] = FeatureRecorder(path, inputs, LAYERS, every=3, overwrite=True)
    fresh.fit(loader(), steps=2, progress=False)
    assert Recording(path).steps == [0, 2]


def test_plot_and_gif(tmp_path):
    path = tmp_path / "p.rec"
    agent = make_agent()
    agent.callbacks.append(FeatureRecorder(path, probe_images(), LAYERS, every=2))
    agent.fit(loader(), steps=8, progress=False)
    rec = Recording(path)
    fig = plot_evolution(rec, "features.4", channel=3, image=1, frames=4)
    assert isinstance(fig, Figure) and len(fig.axes) == 5
    with pytest.raises(ValueError, match="not recorded"):
        plot_evolution(rec, "features.4", channel=99)
    gif = animate(rec, "features.0", tmp_path / "out" / "f0.gif", fps=5)
    with Image.open(gif) as im:
        assert im.n_frames == len(rec.steps)
        assert im.size[0] > 12 * 4
    if shutil.which("ffmpeg"):
        mp4 = animate(rec, "features.0", tmp_path / "f0.mp4")
        assert mp4.read_bytes()[4:8] == b"ftyp"  # an MP4 file (ISO base media), not an empty or partial one
    else:
        with pytest.raises(RuntimeError, match="ffmpeg"):
            animate(rec, "features.0", tmp_path / "f0.mp4")
    with pytest.raises(ValueError, match=".gif or .mp4"):
        animate(rec, "features.0", tmp_path / "f0.avi")
