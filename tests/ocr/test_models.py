"""Recognizer presets, driven by the registry: shapes, output lengths, masking, gradients, specs, errors."""

import pytest
import torch

import dawnet.ocr.models  # noqa: F401  (registers the presets)
from dawnet.ocr.models import Recognizer, model_cfgs
from dawnet.registry import build_model, create_model, list_models, model_spec

MAX_WIDTH = 96  # input sizes are capped so the registry-wide tests stay fast on a laptop CPU
BATCH = 2
PRESETS = [n for n in list_models() if n in model_cfgs]
CTC = [n for n in PRESETS if model_cfgs[n]["head"] == "ctc"]
ATTN = [n for n in PRESETS if model_cfgs[n]["head"] == "attn"]



def _inputs(model, widths=(MAX_WIDTH, 37), seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(len(widths), 1, model.height, max(widths), generator=g)
    return x, torch.tensor(widths)


def test_every_preset_is_registered_with_metadata():
    assert {"crnn", "attn"} <= set(PRESETS)
    assert set(model_cfgs) == set(PRESETS), "every preset needs a model_cfgs entry and vice versa"
    for name in PRESETS:
        model = create_model(name)
        assert isinstance(model, Recognizer)
        assert model.head_kind == model_cfgs[name]["head"]
        assert model.height == model_cfgs[name]["height"]


@pytest.mark.parametrize("name", PRESETS)
@torch.no_grad()
def test_forward_shapes_lengths_and_no_nan(name):
    model = create_model(name, num_classes=11 if name in CTC else 13).eval()
    x, widths = _inputs(model, (MAX_WIDTH, 37, 8))
    out, lengths = model(x, widths)
    assert out.shape[0] == 3 and out.shape[-1] == model.num_classes
    assert torch.isfinite(out[torch.isfinite(out)]).all() and not torch.isnan(out).any()
    if name in CTC:
        # time steps follow the input widths: two 2x2 pools -> floor(floor(w / 2) / 2)
        assert lengths.tolist() == [w // 2 // 2 for w in widths.tolist()] == model.out_lengths(widths).tolist()
        assert out.shape[1] == MAX_WIDTH // 4
        assert torch.allclose(out.exp().sum(-1), torch.ones(out.shape[:2]), atol=1e-5)  # log-probabilities
    else:
        steps = model.out_lengths(widths)
        assert bool((lengths <= steps + 1).all()) and bool((lengths >= 1).all())


@pytest.mark.parametrize("name", CTC)
@pytest.mark.parametrize("width", [4, 5, 31, 33, 63])
@torch.no_grad()
def test_odd_widths(name, width):
    model = create_model(name).eval()
    out, lengths = model(torch.rand(1, 1, model.height, width))
    # two 2x2 max pools floor the width twice; a stride-2 stem conv (padding 1) rounds up instead
    first = (width + 1) // 2 if getattr(model.backbone, "stem_stride", 1) == 2 else width // 2
    assert out.shape[1] == lengths.item() == max(first // 2, 1) == model.out_lengths(torch.tensor([width])).item()


@pytest.mark.parametrize("name", PRESETS)
@torch.no_grad()
def test_padded_batch_equals_lines_alone(name):
    """Padded columns are masked: a line gives the same output alone and inside a wider padded batch."""
    model = create_model(name, num_classes=9).eval()
    x, widths = _inputs(model, (MAX_WIDTH, 45, 22), seed=1)
    x[1, :, :, 45:] = torch.rand_like(x[1, :, :, 45:])  # garbage in the padding must not matter
    batch_out, batch_len = model(x, widths)
    for i, w in enumerate(widths.tolist()):
        alone, alone_len = model(x[i:i + 1, :, :, :w])
        n = int(alone_len)
        assert int(batch_len[i]) == n
        if name in CTC:
            torch.testing.assert_close(batch_out[i, :n], alone[0, :n], atol=1e-4, rtol=1e-4)
        else:  # greedy attention decodes the same tokens
            assert batch_out[i, :n].argmax(-1).tolist() == alone[0, :n].argmax(-1).tolist()


@pytest.mark.parametrize("name", PRESETS)
def test_every_parameter_gets_a_gradient(name):
    model = create_model(name, num_classes=9).train()
    x, widths = _inputs(model, (64, 41))
    if name in CTC:
        out, _ = model(x, widths)
    else:
        targets = torch.tensor([[8, 1, 2, 3], [8, 4, 5, 0]])  # start (= num_classes - 1), characters, pad
        out, lengths, *aux = model(x, widths, targets)
        assert out.shape[:2] == targets.shape and lengths.tolist() == [4, 3]
        if aux:  # joint CTC-attention: the encoder's CTC output joins the loss
            out = torch.cat([out.flatten(), aux[0][0].flatten()])
    out.square().mean().backward()  # square: a log_softmax output summed would give zero gradients
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"parameters without a finite gradient: {missing}"


@pytest.mark.parametrize("name", PRESETS)
def test_spec_rebuilds_the_same_model(name):
    model = create_model(name, num_classes=21, height=48)
    spec = model_spec(model)
    assert spec["name"] == name and spec["kwargs"] == {"num_classes": 21, "height": 48}
    again = build_model(spec)
    assert again.height == 48
    assert {k: v.shape for k, v in again.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}


@pytest.mark.parametrize("height", [32, 48, 64])
@pytest.mark.parametrize("backbone", ["vgg", "resnet"])
@torch.no_grad()
def test_configurable_height_and_backbone(height, backbone):
    model = create_model("recognizer", height=height, backbone=backbone, width=8, hidden=16).eval()
    out, lengths = model(torch.rand(2, 1, height, 40), torch.tensor([40, 21]))
    assert lengths.tolist() == [10, 5] and out.shape == (2, 10, 96)


def test_sequence_model_none_and_luong_attention():
    model = create_model("recognizer", seq="none", width=8, num_classes=7).eval()
    assert model.seq is None
    out, _ = model(torch.rand(1, 1, 32, 48))
    assert out.shape == (1, 12, 7)
    luong = create_model("attn_luong", num_classes=7)
    assert luong.head.attention == "luong"


def test_feature_info_and_classifier_reset():
    model = create_model("crnn")
    info = model.feature_info
    assert [f["num_chs"] for f in info] == [16, 32, 64, 128, 128]
    modules = dict(model.named_modules())
    assert all(f"backbone.{f['module']}" in modules for f in info)
    assert info[-1]["reduction"] == (16, 4)  # 32 px -> 2 rows; width / 4
    model.reset_classifier(40)
    assert model.get_classifier().fc.out_features == 40 and model.num_classes == 40


@torch.no_grad()
def test_strided_stem_matches_the_pooled_stack_in_shape():
    """stem_stride=2 replaces the first max pool: same feature shapes, a conv less at full resolution."""
    pooled = create_model("recognizer", width=8, hidden=16).eval()
    strided = create_model("recognizer", width=8, hidden=16, stem_stride=2).eval()
    assert len(strided.backbone.layers) == len(pooled.backbone.layers) - 1
    assert [f["reduction"] for f in strided.feature_info] == [f["reduction"] for f in pooled.feature_info]
    x = torch.rand(2, 1, 32, 64)
    a, b = pooled.forward_features(x)[0], strided.forward_features(x)[0]
    assert a.shape == b.shape
    with pytest.raises(ValueError, match="stem_stride"):
        create_model("recognizer", backbone="resnet", stem_stride=2)
    with pytest.raises(ValueError, match=r"depths\[0\] == 1"):
        create_model("recognizer", stem_stride=2, depths=(2, 1, 2, 2, 1))
    with pytest.raises(ValueError, match="1 or 2"):
        create_model("recognizer", stem_stride=3)


def test_aux_ctc_output_only_while_teacher_forcing():
    model = create_model("attn", num_classes=9).train()
    x, widths = _inputs(model, (64, 41))
    targets = torch.tensor([[8, 1, 2, 3], [8, 4, 5, 0]])
    logits, lengths, (ctc, ctc_lengths) = model(x, widths, targets)
    assert ctc.shape[-1] == 9 - 2  # blank + the characters (no end/start)
    assert ctc_lengths.tolist() == model.out_lengths(widths).tolist() and ctc.shape[1] == int(ctc_lengths.max())
    assert len(model.eval()(x, widths)) == 2  # free decoding: the usual (logits, lengths)
    with pytest.raises(ValueError, match="aux_ctc"):
        create_model("crnn", aux_ctc=True)


def test_bad_inputs_get_clear_errors():
    model = create_model("crnn_small").eval()
    with pytest.raises(ValueError, match="32 px high"):
        model(torch.rand(1, 1, 48, 100))
    with pytest.raises(ValueError, match="grayscale"):
        model(torch.rand(1, 3, 32, 100))
    with pytest.raises(ValueError, match="at least 4 px wide"):
        model(torch.rand(1, 1, 32, 3))
    with pytest.raises(ValueError, match="widths"):
        model(torch.rand(2, 1, 32, 100), torch.tensor([100, 101]))
    with pytest.raises(ValueError, match="backbone"):
        Recognizer(backbone="vit")
    with pytest.raises(ValueError, match="height"):
        Recognizer(height=8)
    with pytest.raises(ValueError, match="head"):
        Recognizer(head="crf")
