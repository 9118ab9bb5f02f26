"""Detection plumbing: NMS against a brute-force reference, letterbox and augmentation round trips, targets,
the loss, decoding, and the detection agent's checkpoint/inference contract."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from dawnet.ocr.detection import (
    DetectionAgent,
    DetectionAugment,
    assign_targets,
    batched_nms,
    box_iou,
    decode_detections,
    decode_ltrb,
    detection_loss,
    encode_ltrb,
    grid_points,
    letterbox,
    letterbox_boxes,
    nms,
    order_lines,
    unletterbox_boxes,
)
from dawnet.ocr.models.yolo import yolo


def brute_force_nms(boxes, scores, thr, labels=None):
    """The textbook greedy loop, one box at a time, in plain Python floats."""
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))
    kept = []
    for i in order:
        ok = True
        for j in kept:
            if labels is not None and int(labels[i]) != int(labels[j]):
                continue
            a, b = boxes[i].tolist(), boxes[j].tolist()
            iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
            ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
            inter = iw * ih
            union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
            if inter / union > thr:
                ok = False
                break
        if ok:
            kept.append(i)
    return kept


def random_boxes(g, n, clustered=True):
    centres = torch.rand(4, 2, generator=g) * 200
    c = centres[torch.randint(0, 4, (n,), generator=g)] if clustered else torch.rand(n, 2, generator=g) * 200
    c = c + torch.randn(n, 2, generator=g) * 8
    wh = torch.rand(n, 2, generator=g) * torch.tensor([120.0, 20.0]) + 4  # wide, thin: text lines
    return torch.cat([c - wh / 2, c + wh / 2], 1)


@pytest.mark.parametrize("thr", [0.3, 0.5, 0.7])
def test_batched_nms_matches_the_brute_force_loop(thr):
    g = torch.Generator().manual_seed(int(thr * 10))
    B, K = 5, 60
    boxes = torch.stack([random_boxes(g, K) for _ in range(B)])
    scores = torch.rand(B, K, generator=g)
    scores[0, 5] = scores[0, 6]  # a tie: broken by index, as in the reference
    valid = torch.rand(B, K, generator=g) > 0.2
    labels = torch.randint(0, 2, (B, K), generator=g)
    keep = batched_nms(boxes, scores, thr, valid=valid)
    keep_l = batched_nms(boxes, scores, thr, labels=labels, valid=valid)
    for b in range(B):
        idx = valid[b].nonzero().flatten()
        ref = brute_force_nms(boxes[b, idx], scores[b, idx], thr)
        assert sorted(idx[ref].tolist()) == keep[b].nonzero().flatten().tolist()
        ref = brute_force_nms(boxes[b, idx], scores[b, idx], thr, labels[b, idx])
        assert sorted(idx[ref].tolist()) == keep_l[b].nonzero().flatten().tolist()
    assert 0 < keep.sum() < valid.sum()  # the test is not vacuous: something was suppressed, something kept


def test_nms_chains_are_resolved_greedily():
    # A overlaps B, B overlaps C, A does not overlap C: greedy keeps A and C (B is suppressed by A)
    boxes = torch.tensor([[0, 0, 10, 10], [5, 0, 15, 10], [10, 0, 20, 10]], dtype=torch.float)
    scores = torch.tensor([0.9, 0.8, 0.7])
    assert nms(boxes, scores, 0.3).tolist() == [0, 2]
    assert nms(boxes, scores, 0.99).tolist() == [0, 1, 2]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


def test_nms_rejects_bad_shapes():
    with pytest.raises(ValueError, match="boxes \\(B, K, 4\\)"):
        batched_nms(torch.zeros(3, 4), torch.zeros(3))


def test_box_iou_is_batched_and_exact():
    a = torch.tensor([[[0.0, 0, 10, 10]], [[0, 0, 4, 4]]])
    b = torch.tensor([[[5.0, 0, 15, 10], [20, 20, 30, 30]], [[0, 0, 2, 2], [0, 0, 4, 4]]])
    iou = box_iou(a, b)
    assert iou.shape == (2, 1, 2)
    assert torch.allclose(iou, torch.tensor([[[50 / 150, 0.0]], [[0.25, 1.0]]]))


def test_letterbox_keeps_aspect_and_boxes_round_trip():
    page = Image.new("L", (300, 424), 255)
    box = (30, 100, 270, 130)
    page.paste(0, box)
    canvas, lb = letterbox(page, 320)
    assert canvas.shape == (1, 320, 320)
    cb = letterbox_boxes(torch.tensor([box], dtype=torch.float), lb)[0]
    # the ink lies inside the mapped box, and fills it (within the resampling blur)
    ys, xs = np.nonzero(canvas[0].numpy() > 0.5)
    assert abs(xs.min() - cb[0]) <= 1 and abs(xs.max() + 1 - cb[2]) <= 1
    assert abs(ys.min() - cb[1]) <= 1 and abs(ys.max() + 1 - cb[3]) <= 1
    # aspect kept: the page fills the height, is centred horizontally, padding is blank
    assert canvas[0, :, :5].abs().max() == 0 and canvas[0, :, -5:].abs().max() == 0
    back = unletterbox_boxes(cb[None], lb)[0]
    assert torch.allclose(back, torch.tensor(box, dtype=torch.float), atol=1e-3)


def test_letterbox_rejects_bad_sizes():
    with pytest.raises(ValueError, match="multiple of 32"):
        letterbox(Image.new("L", (10, 10)), 100)


@pytest.mark.parametrize("seed", range(6))
def test_augmentation_moves_boxes_with_the_pixels(seed):
    W, H = 400, 566
    boxes = np.array(
        [[40, 60, 360, 90], [60, 150, 250, 170], [30, 300, 380, 340], [200, 480, 260, 500]], float
    )
    # geometry only (photometric changes off): the same seed gives the same transform, so each rectangle is
    # drawn alone on its own page and its pixels are found after the transform
    aug = DetectionAugment(scale=(0.7, 1.3), translate=0.15, flip=0.5, p=0.0)
    results = []
    for k in range(len(boxes)):
        page = np.full((H, W), 230, np.uint8)
        x0, y0, x1, y1 = boxes[k].astype(int)
        page[y0:y1, x0:x1] = 0
        out, nb, keep = aug(Image.fromarray(page), boxes, np.random.default_rng(seed))
        assert np.asarray(out).shape == (H, W)
        results.append((np.asarray(out), nb, keep))
    _, nb, keep = results[0]
    assert all(np.array_equal(r[2], keep) and np.array_equal(r[1], nb) for r in results)
    assert len(nb) == len(keep) >= 1
    for b, k in zip(nb, keep):
        ys, xs = np.nonzero(results[k][0] < 115)  # more than half ink
        assert xs.size, f"box {k} was kept but its rectangle left the page"
        assert abs(xs.min() - b[0]) <= 1 and abs(xs.max() + 1 - b[2]) <= 1, (k, b, xs.min(), xs.max())
        assert abs(ys.min() - b[1]) <= 1 and abs(ys.max() + 1 - b[3]) <= 1, (k, b, ys.min(), ys.max())
    for k in set(range(len(boxes))) - set(keep.tolist()):  # a dropped box kept < 60% of itself on the page
        ys, xs = np.nonzero(results[k][0] < 115)
        w, h = boxes[k, 2] - boxes[k, 0], boxes[k, 3] - boxes[k, 1]
        assert xs.size < 0.6 * w * h * 1.3**2 + 2 * (w + h) * 1.3


def test_augmentation_is_seeded():
    page = Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 140), dtype=np.uint8))
    boxes = np.array([[10, 10, 100, 30]], float)
    aug = DetectionAugment()
    a = aug(page, boxes, np.random.default_rng(3))
    b = aug(page, boxes, np.random.default_rng(3))
    assert np.array_equal(np.asarray(a[0]), np.asarray(b[0])) and np.array_equal(a[1], b[1])


def test_ltrb_coding_round_trips():
    g = torch.Generator().manual_seed(0)
    pts = torch.rand(50, 2, generator=g) * 100
    d = torch.rand(50, 4, generator=g) * 300
    boxes = decode_ltrb(pts, d)
    assert torch.allclose(encode_ltrb(pts, boxes), d, atol=1e-4)


def test_every_line_gets_positive_points_even_thin_and_long_ones():
    points = grid_points(40, 40, 8)  # a 320 x 320 canvas
    gt = torch.tensor(
        [
            [10.0, 20.0, 310.0, 24.0],  # 300 x 4 px: thinner than a stride, between grid rows
            [100.0, 60.0, 105.0, 90.0],  # narrower than a stride
            [8.0, 100.0, 300.0, 130.0],
        ]
    )  # an ordinary line
    positive, targets = assign_targets(points, [gt], 8)
    for k, box in enumerate(gt):
        owned = positive[0] & (targets[0] == box).all(-1)
        assert owned.any(), f"line {k} has no positive point"
    long_line = positive[0] & (targets[0] == gt[0]).all(-1)
    xs = points[long_line][:, 0]
    assert xs.min() < 20 and xs.max() > 300  # positives along the whole length, not only near the centre
    # nothing far from any line is positive
    far = points[:, 1] > 200
    assert not positive[0][far].any()


def test_smaller_line_wins_where_lines_overlap():
    points = torch.tensor([[50.0, 50.0]])
    big, small = torch.tensor([0.0, 0.0, 200.0, 100.0]), torch.tensor([40.0, 40.0, 60.0, 60.0])
    positive, targets = assign_targets(points, [torch.stack([big, small])], 8)
    assert positive.all() and torch.equal(targets[0, 0], small)


def perfect_outputs(gt, size=320, stride=8):
    """Raw outputs that encode the ground truth exactly: what a perfect detector would emit."""
    h = size // stride
    points = grid_points(h, h, stride)
    positive, targets = assign_targets(points, [gt], stride)
    d = encode_ltrb(points, targets[0]).clamp(min=1e-3)
    out = torch.zeros(1, 5, h, h)
    logit = torch.where(positive[0], 8.0, -8.0)
    out[0, 0] = logit.reshape(h, h)
    out[0, 1:] = torch.log(d / stride).T.reshape(4, h, h)
    return out


def test_perfect_outputs_have_low_loss_and_decode_to_the_ground_truth():
    gt = torch.tensor([[20.0, 30.0, 300.0, 52.0], [40.0, 80.0, 200.0, 100.0], [20.0, 140.0, 120.0, 170.0]])
    out = perfect_outputs(gt)
    loss, parts = detection_loss(out, [gt])
    noisy = out + torch.randn_like(out)
    worse, _ = detection_loss(noisy, [gt])
    assert parts["box"] < 1e-3 and loss < worse
    det = decode_detections(out, score_threshold=0.5)[0]
    assert len(det["boxes"]) == 3  # NMS collapsed the many points of each line into one box
    iou = box_iou(det["boxes"], gt)
    assert (iou.max(1).values > 0.99).all()


def test_iou_aware_objectness_targets_each_points_box_iou():
    """With iou_aware the positives' objectness target is their own box's IoU with the line, not 1."""
    gt = torch.tensor([[20.0, 30.0, 300.0, 52.0]])
    out = perfect_outputs(gt)
    g = torch.Generator().manual_seed(0)
    out[:, 1:] += 0.5 * torch.randn(out[:, 1:].shape, generator=g)  # boxes of uneven quality
    out[:, 0] = torch.randn(out[:, 0].shape, generator=g)
    _, binary = detection_loss(out, [gt])
    _, aware = detection_loss(out, [gt], iou_aware=True)
    # the reference: BCE against IoU targets, built from the public pieces
    n, _, h, w = out.shape
    points = grid_points(h, w, 8)
    flat = out.permute(0, 2, 3, 1).reshape(n, h * w, 5)
    boxes = decode_ltrb(points[None], torch.exp(flat[..., 1:]) * 8)
    positive, targets = assign_targets(points, [gt], 8)
    target = torch.zeros(n, h * w)
    target[positive] = torch.diagonal(box_iou(boxes[positive], targets[positive]))
    assert 0 < float(target[positive].min()) < float(target[positive].max()) < 1
    ref = torch.nn.functional.binary_cross_entropy_with_logits(flat[..., 0], target, reduction="sum")
    assert aware["obj"] == pytest.approx(float(ref) / int(positive.sum()), rel=1e-5)
    assert aware["box"] == binary["box"] and aware["obj"] != binary["obj"]


def test_loss_has_gradients_for_every_parameter_and_handles_empty_pages():
    m = yolo()
    x = torch.rand(2, 1, 128, 128)
    loss, parts = detection_loss(m(x), [torch.tensor([[10.0, 10.0, 100.0, 25.0]]), torch.zeros(0, 4)])
    loss.backward()
    assert math.isfinite(float(loss.detach())) and parts["positives"] > 0
    assert all(p.grad is not None for p in m.parameters())


def test_order_lines_is_top_to_bottom_then_left_to_right():
    boxes = torch.tensor(
        [[10.0, 200, 100, 220], [10, 10, 300, 30], [150, 202, 300, 221], [10, 100, 200, 120]]
    )
    assert order_lines(boxes).tolist() == [1, 3, 0, 2]


def test_agent_saves_loads_and_infers_page_coordinates(tmp_path):
    torch.manual_seed(0)
    m = yolo(size=256)
    agent = DetectionAgent(
        m, torch.optim.AdamW(m.parameters(), 1e-3), size=256, score_threshold=0.0, device="cpu"
    )
    page = Image.new("L", (200, 283), 240)
    page.paste(20, (20, 40, 180, 60))
    result = agent.infer(page)
    assert set(result) == {"boxes", "scores"}
    b = result["boxes"]
    assert b.ndim == 2 and b.shape[1] == 4 and len(b) >= 1
    assert (b[:, 0] >= 0).all() and (b[:, 2] <= 200).all() and (b[:, 3] <= 283).all()  # page pixels, clipped
    path = agent.save(tmp_path / "det.pt")
    again = DetectionAgent.load(path, map_location="cpu")
    assert type(again) is DetectionAgent and again.size == 256 and again.score_threshold == 0.0
    r2 = again.infer(page)
    assert torch.allclose(r2["boxes"], b) and torch.allclose(r2["scores"], result["scores"])


def test_agent_rejects_bad_batches():
    m = yolo()
    agent = DetectionAgent(m, torch.optim.SGD(m.parameters(), 0.1), device="cpu")
    with pytest.raises(TypeError, match="'images' and 'boxes'"):
        agent.unpack({"images": torch.zeros(1, 1, 64, 64)})


def test_agent_evaluate_is_the_mean_loss_and_the_map_of_every_page():
    """evaluate() runs the Agent's loop: the loss averaged over pages, mAP over all pages at once."""
    from dawnet.ocr.metrics import detection_map

    torch.manual_seed(0)
    m = yolo(size=128)
    agent = DetectionAgent(m, torch.optim.SGD(m.parameters(), 0.1), size=128, device="cpu")
    assert agent.kind == "detection"
    g = torch.Generator().manual_seed(1)
    batches = [(torch.rand(n, 1, 128, 128, generator=g), [torch.tensor([[10.0, 20.0, 100.0, 34.0]])] * n)
               for n in (2, 1)]
    got = agent.evaluate(batches)
    m.eval()
    losses, gts, preds = [], [], []
    with torch.no_grad():
        for x, boxes in batches:
            out = m(x)
            losses.append(float(agent.compute_loss(out, boxes)) * len(x))
            gts += [b.numpy() for b in boxes]
            preds += agent.predict(out, (x,))
    expected = {"loss": sum(losses) / 3, **detection_map(gts, preds)}
    assert got.keys() == expected.keys()
    assert got == pytest.approx(expected, rel=1e-6)
    with pytest.raises(ValueError, match="empty"):
        agent.evaluate([])


def test_gray_page_reads_every_input_kind_as_the_same_8_bit_page():
    from dawnet.ocr.boxes import gray_page

    eight = np.random.default_rng(0).integers(0, 256, (40, 60), dtype=np.uint8)
    want = np.asarray(gray_page(Image.fromarray(eight)))
    assert (want == eight).all()
    assert (np.asarray(gray_page(eight.astype(np.uint16) * 257)) == eight).all()  # 16-bit levels scaled
    assert (np.asarray(gray_page(torch.from_numpy(eight / 255.0)[None])) == np.clip(eight / 255.0 * 255, 0, 255)
            .astype(np.uint8)).all()  # a (1, H, W) float tensor in 0..1
    with pytest.raises(ValueError, match=r"a page array must be \(H, W\)"):
        gray_page(np.zeros((2, 3, 4, 5), dtype=np.float32))
