"""Fixtures of the inspector tests: real rendered handwriting lines, a data folder, real checkpoints."""

import pytest
import torch

import dawnet.ocr.models  # noqa: F401  (registers the presets)
from dawnet.ocr.agents import CTCAgent
from dawnet.ocr.charset import Charset
from dawnet.ocr.data.datasets import collate_lines, to_tensor
from dawnet.ocr.data.fonts import find_fonts
from dawnet.ocr.data.formats import write_folder
from dawnet.ocr.data.synth import LineSynthesizer
from dawnet.registry import create_model

TEXTS = ["hello", "world 42", "dawnet", "ocr line", "inspect me", "live maps"]



@pytest.fixture(scope="session")
def lines():
    """Real rendered handwriting lines (one installed handwriting font), as PIL images."""
    fonts = [f for f in find_fonts() if f.covers("".join(TEXTS))][:1]
    if not fonts:
        pytest.skip(
            "no installed handwriting font covers the test texts (the project's set-up installs them)"
        )
    synth = LineSynthesizer(fonts)
    return [synth.render(t, seed=i).image for i, t in enumerate(TEXTS)]


@pytest.fixture(scope="session")
def charset():
    return Charset.from_texts(TEXTS)


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory, lines):
    """A folder of line data as users keep it: ``name.png`` + ``name.gt.txt``."""
    out = tmp_path_factory.mktemp("lines")
    write_folder(zip(lines, TEXTS), out)
    return out


def ctc_agent(charset, preset="crnn_small", lr=3e-3):
    torch.manual_seed(0)
    model = create_model(preset, num_classes=charset.num_ctc_classes)
    return CTCAgent(model, torch.optim.Adam(model.parameters(), lr), charset=charset, device="cpu")


@pytest.fixture(scope="session")
def crnn_checkpoint(tmp_path_factory, charset):
    """An untrained small CRNN saved as a real checkpoint (Agent.save)."""
    path = tmp_path_factory.mktemp("ckpt") / "crnn_small.pt"
    ctc_agent(charset).save(path)
    return path


@pytest.fixture(scope="session")
def trained_checkpoint(tmp_path_factory, charset, lines):
    """A small CRNN trained until it reads the test lines (seconds), saved with Agent.save."""
    agent = ctc_agent(charset)
    items = [{"image": to_tensor(im, 32), "text": t} for im, t in zip(lines, TEXTS)]
    batch = collate_lines(items)
    for step in range(600):
        agent.learn(batch)
        if step % 25 == 24 and agent.evaluate([batch])["cer"] == 0.0:
            break
    path = tmp_path_factory.mktemp("trained") / "crnn_trained.pt"
    agent.save(path)
    return path


@pytest.fixture(scope="session")
def bomb_png() -> bytes:
    """A tiny PNG whose header claims 20000 x 20000 pixels (400 MP: Pillow calls it a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", 20000, 20000, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b"")
