"""The inspector's endpoints through Starlette's TestClient: every endpoint, bad requests included, and
that the server keeps serving after each of them. Real checkpoints (Agent.save), rendered lines, real
image files."""

import base64
import io
import json
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

pytest.importorskip("starlette", reason="the inspector needs the `inspect` extra (starlette, uvicorn, httpx)")
pytest.importorskip("httpx2", reason="Starlette's TestClient needs httpx2 (the `inspect` extra)")
from starlette.testclient import TestClient  # noqa: E402

from dawnet.agent import Agent  # noqa: E402
from dawnet.diagnose.probe import capture  # noqa: E402
from dawnet.diagnose.trace import canonical, feature_layout, receptive_field  # noqa: E402
from dawnet.inspector import open_session  # noqa: E402
from dawnet.inspector.app import TOKEN_COOKIE, create_app  # noqa: E402
from dawnet.inspector.images import as_raw  # noqa: E402
from dawnet.inspector.session import Augment, Session  # noqa: E402
from dawnet.inspector.view import default_layer  # noqa: E402
from dawnet.registry import register_model  # noqa: E402

BASE = "http://127.0.0.1"


@pytest.fixture(scope="module")
def session(crnn_checkpoint, data_dir):
    return open_session(crnn_checkpoint, data=data_dir)


@pytest.fixture
def client(session, data_dir):
    session.set_base(session.samples[0].load(), session.samples[0].name)
    session.augment = Augment()
    session.set_source(None, "")
    session.set_view(
        {"layer": default_layer(session.layers), "rank": "active", "count": 16, "channels": [], "scale": "shared"}
    )
    with TestClient(create_app(session, data_root=data_dir, max_body=1 << 20), base_url=BASE) as c:
        yield c


def post(client, path, body, **kw):
    return client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"}, **kw)


def maps_of(state):
    m = state["maps"]
    q = np.frombuffer(base64.b64decode(m["data"]), dtype=np.uint8).reshape(
        len(m["channels"]), m["height"], m["width"]
    )
    lo, hi = np.array(m["min"])[:, None, None], np.array(m["max"])[:, None, None]
    return lo + q / 255.0 * (hi - lo)


def png_array(client):
    r = client.get("/api/image.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    return np.asarray(Image.open(io.BytesIO(r.content)), dtype=np.float32) / 255.0


def still_serving(client):
    r = client.get("/api/state")
    assert r.status_code == 200, r.text
    assert r.json()["output"]["kind"] == "text"


def error_of(r, status):
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert isinstance(body["error"], str) and len(body["error"]) > 10
    return body["error"]


def png_bytes(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


# -- page and info ------------------------------------------------------------------------------------------


def test_page_and_static_files_are_served_with_no_outside_resources(client):
    page = client.get("/")
    assert page.status_code == 200 and '<canvas id="input"' in page.text
    assert "http://" not in page.text and "https://" not in page.text  # no CDN: works offline
    csp = page.headers["content-security-policy"]
    assert "default-src 'self'" in csp and page.headers["x-content-type-options"] == "nosniff"
    for name, kind in [("app.js", "javascript"), ("app.css", "css")]:
        r = client.get(f"/static/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
        assert "http://" not in r.text and "https://" not in r.text


def test_info_lists_layers_sliders_and_colour_maps(client, session):
    info = client.get("/api/info").json()
    assert info["kind"] == "ctc" and info["samples"] == 6
    names = [entry["name"] for entry in info["layers"]]
    assert info["layer"] in names and "seq" in names and "output" in names
    conv = next(e for e in info["layers"] if e["name"] == info["layer"])
    assert conv["layout"] == "NCHW" and len(conv["shape"]) == 3
    assert set(info["ranges"]) == {"rotation", "scale", "elastic", "contrast", "blur", "noise", "seed"}
    assert len(info["colormaps"]["viridis"]) == 256 * 3


def test_samples_are_listed_with_their_texts(client):
    r = client.get("/api/samples?offset=1&limit=2").json()
    assert r["total"] == 6 and [i["index"] for i in r["items"]] == [1, 2]
    assert r["items"][0]["label"] == "world 42"
    error_of(client.get("/api/samples?limit=abc"), 400)
    error_of(client.get("/api/samples?limit=0"), 400)
    still_serving(client)


# -- state: maps, output, delta, timing ----------------------------------------------------------------------


def test_state_maps_are_the_probed_activations(client, session):
    s = client.get("/api/state").json()
    assert s["image"]["png"].startswith("data:image/png;base64,")
    assert s["image"]["height"] == 32
    layer = s["maps"]["layer"]
    # the same activations straight from dawnet.diagnose.probe on what the agent prepares from the image
    x = session.current_image()
    inputs = session.agent.prepare(x[0].numpy())
    acts, _ = capture(session.model, layer, *inputs)
    want = canonical(acts[layer], feature_layout(dict(session.model.named_modules())[layer], acts[layer]))[0]
    got = maps_of(s)
    chans = s["maps"]["channels"]
    assert len(chans) == 16
    span = float(want[chans].max() - want[chans].min())
    np.testing.assert_allclose(got, want[chans].numpy(), atol=span / 255 + 1e-6)
    # "strongest" = largest mean activation first
    means = want.reshape(want.shape[0], -1).mean(1)
    assert chans == means.topk(16).indices.tolist()
    assert s["delta"]["mean_abs_change"] == [0.0] * want.shape[0]  # unedited: no change against the original
    assert set(s["timing"]) == {"edit_ms", "forward_ms", "encode_ms", "total_ms"}


def test_output_text_has_one_confidence_per_character(client, session):
    out = client.get("/api/state").json()["output"]
    assert out["kind"] == "text"
    assert "".join(c["c"] for c in out["chars"]) == out["greedy"] == out["text"]
    # the agent's own reading of the image the page shows: its text and the model's probability per character
    (want,) = session.agent.read([as_raw(session.current_image())])
    assert out["text"] == want.text
    assert [c["p"] for c in out["chars"]] == [round(p, 4) for p in want.confidences]
    assert out["original"]["text"] == out["text"]


# -- edits ---------------------------------------------------------------------------------------------------


def test_stroke_changes_image_maps_and_delta_and_undo_restores(client):
    before = client.get("/api/state").json()
    img0 = png_array(client)
    r = post(client, "/api/edit", {"op": "stroke", "points": [[16, 2], [16, 60]], "width": 4, "mode": "pen"})
    after = r.json()
    assert r.status_code == 200 and after["ops"] == 1
    img1 = png_array(client)
    assert img1[16, 10:50].max() < 0.2 and img0[16, 10:50].min() > img1[16, 10:50].max()  # ink drawn
    assert (
        np.abs(maps_of(after) - maps_of(before)).max() > 0
        or after["maps"]["channels"] != before["maps"]["channels"]
    )
    assert max(after["delta"]["mean_abs_change"]) > 0
    undone = post(client, "/api/edit", {"op": "undo"}).json()
    assert undone["ops"] == 0 and max(undone["delta"]["mean_abs_change"]) == 0.0
    np.testing.assert_array_equal(png_array(client), img0)
    # a stroke sent live, piece by piece, is one edit: undo removes all of it
    post(client, "/api/edit", {"op": "stroke", "points": [[8, 2], [8, 20]], "width": 3})
    post(client, "/api/edit", {"op": "stroke", "points": [[8, 20], [8, 40]], "width": 3, "continue": True})
    piece = {"op": "stroke", "points": [[8, 40], [20, 50]], "width": 3, "continue": True}
    live = post(client, "/api/edit", piece)
    assert live.json()["ops"] == 1 and png_array(client)[8, 30] < 0.2 and png_array(client)[19, 49] < 0.5
    assert post(client, "/api/edit", {"op": "undo"}).json()["ops"] == 0
    np.testing.assert_array_equal(png_array(client), img0)
    post(client, "/api/edit", {"op": "stroke", "points": [[5, 5]], "width": 6, "mode": "eraser"})
    post(client, "/api/edit", {"op": "erase", "box": [0, 0, 32, 20]})
    assert png_array(client)[:, :20].min() > 0.6  # erased to paper
    assert post(client, "/api/edit", {"op": "reset"}).json()["ops"] == 0


def test_paste_puts_the_source_region_at_the_chosen_place(client, lines):
    src = post(client, "/api/source", {"index": 2})
    assert src.status_code == 200 and src.json()["height"] == 32
    src_arr = (
        np.asarray(
            Image.open(io.BytesIO(base64.b64decode(src.json()["png"].split(",")[1]))), dtype=np.float32
        )
        / 255.0
    )
    box, at = [4, 10, 28, 40], [2, 20]
    r = post(client, "/api/edit", {"op": "paste", "box": box, "at": at})
    assert r.status_code == 200
    img = png_array(client)
    np.testing.assert_allclose(img[2:26, 20:50], src_arr[4:28, 10:40], atol=1 / 255 + 1e-6)
    # cutting from the current image itself moves a piece of the line
    assert post(client, "/api/source", {"current": True}).json()["name"] == "current image"
    assert post(client, "/api/edit", {"op": "paste", "box": [0, 0, 32, 10], "at": [0, 40]}).status_code == 200


@pytest.mark.parametrize(
    "body, status",
    [
        ({"op": "stroke", "points": []}, 400),
        ({"op": "stroke", "points": [[1, "x"]]}, 400),
        ({"op": "stroke", "points": [[1, 2]], "width": 1e9}, 400),
        ({"op": "stroke", "points": [[1, 2]], "mode": "spray"}, 400),
    ({"op": "stroke", "points": [[1, 2]], "continue": "yes"}, 400),
        ({"op": "erase", "box": [0, 0, 0, 0]}, 400),
        ({"op": "erase", "box": "all"}, 400),
        ({"op": "paste", "box": [0, 0, 5, 5], "at": [1e6, 1e6]}, 400),
        ({"op": "explode"}, 400),
        ({"points": [[1, 2]]}, 400),
    ],
)
def test_bad_edits_are_refused_with_a_message(client, body, status):
    error_of(post(client, "/api/edit", body), status)
    still_serving(client)


# -- view and augmentations ----------------------------------------------------------------------------------


def test_sliders_augment_through_dawnet_diagnose_edit(client, session):
    from dawnet.diagnose import edit

    base = session.edited.clone()
    r = post(client, "/api/view", {"augment": {"blur": 1.5, "rotation": 10, "noise": 0.05, "seed": 3}})
    assert r.status_code == 200 and r.json()["augment"]["blur"] == 1.5
    want = edit.add_noise(edit.blur(edit.rotate(base, 10), 1.5), 0.05, seed=3)
    np.testing.assert_allclose(png_array(client), want[0].numpy(), atol=1 / 255 + 1e-6)
    assert max(r.json()["delta"]["mean_abs_change"]) > 0
    for name, value in [("scale", 1.3), ("contrast", 0.4), ("elastic", 6.0)]:
        r = post(client, "/api/view", {"augment": {name: value}})
        assert r.status_code == 200 and r.json()["augment"][name] == value


@pytest.mark.parametrize(
    "body",
    [
        {"augment": {"blur": 99}},
        {"augment": {"sharpen": 1}},
        {"augment": {"noise": "lots"}},
        {"augment": [1]},
        {"augment": {"rotation": float("nan")}},
        {"rank": "random"},
        {"count": 0},
        {"count": True},
        {"channels": [9999], "rank": "list"},
        {"scale": "log"},
    ],
)
def test_bad_view_settings_are_refused(client, body):
    error_of(post(client, "/api/view", body), 400)
    still_serving(client)


def test_view_picks_layers_channels_and_colour_scales(client):
    r = post(client, "/api/view", {"layer": "seq", "rank": "list", "channels": [3, 1, 4], "scale": "channel"})
    m = r.json()["maps"]
    assert m["layer"] == "seq" and m["channels"] == [3, 1, 4] and m["sequence"] and m["height"] == 1
    vals = maps_of(r.json())
    for i in range(3):  # one colour scale per map: each map spans its own min..max
        assert vals[i].min() == pytest.approx(m["min"][i], abs=1e-6) and vals[i].max() == pytest.approx(
            m["max"][i]
        )
    post(client, "/api/edit", {"op": "stroke", "points": [[16, 0], [16, 80]], "width": 5})
    changed = post(client, "/api/view", {"layer": "seq", "rank": "changed", "count": 5}).json()
    delta = np.array(changed["delta"]["mean_abs_change"])
    chosen = delta[changed["maps"]["channels"]]
    np.testing.assert_allclose(
        chosen, np.sort(delta)[::-1][:5], atol=2e-6
    )  # the 5 largest changes, largest first
    error_of(post(client, "/api/view", {"layer": "no.such.layer"}), 404)
    # listed channels that the next layer lacks are dropped on a layer switch, not an error
    listed = {"layer": "seq", "rank": "list", "channels": [100, 2]}
    assert post(client, "/api/view", listed).status_code == 200
    switched = post(client, "/api/view", {"layer": "backbone.layers.0.0"}).json()
    assert switched["maps"]["channels"] == [2] and switched["view"]["rank"] == "list"
    still_serving(client)


def test_an_attention_recognizer_shows_text_with_confidences(tmp_path, charset, lines):
    from dawnet.ocr.agents import AttentionAgent
    from dawnet.registry import create_model

    torch.manual_seed(0)
    model = create_model("attn_small", num_classes=charset.num_attn_classes)
    AttentionAgent(model, torch.optim.Adam(model.parameters()), charset=charset, device="cpu").save(
        tmp_path / "attn.pt"
    )
    s = open_session(tmp_path / "attn.pt", image=lines[1])
    with TestClient(create_app(s), base_url=BASE) as c:
        out = c.get("/api/state").json()["output"]
        assert c.get("/api/info").json()["kind"] == "attn"
        assert out["kind"] == "text" and out["text"] == out["greedy"]
        assert "".join(ch["c"] for ch in out["chars"]) == out["text"]
        (want,) = s.agent.read([as_raw(s.current_image())])
        assert out["text"] == want.text and [ch["p"] for ch in out["chars"]] == [round(p, 4) for p in want.confidences]
        r = post(c, "/api/edit", {"op": "stroke", "points": [[16, 0], [16, 60]], "width": 5})
        assert r.status_code == 200 and max(r.json()["delta"]["mean_abs_change"]) > 0


# -- receptive fields and top patches ------------------------------------------------------------------------


def test_receptive_field_of_a_clicked_cell_is_dawnet_diagnose_trace(client, session):
    layer = client.get("/api/info").json()["layer"]
    r = post(client, "/api/rf", {"layer": layer, "position": [1, 5]})
    assert r.status_code == 200
    x = session.current_image()
    shape = tuple(session.agent.prepare(x[0].numpy())[0].shape[1:])
    rf = receptive_field(session.model, layer, shape, method="analytic")
    assert r.json()["box"] == list(rf.box(1, 5)) and r.json()["method"] == "analytic"
    seq = post(client, "/api/rf", {"layer": "seq", "position": [3]}).json()
    assert seq["box"][1] == 0 and seq["box"][3] == shape[-1]  # a BiLSTM step sees the whole line...
    assert seq["effective_box"][3] - seq["effective_box"][1] < shape[-1]  # ...but mostly a window of it
    error_of(post(client, "/api/rf", {"layer": layer, "position": [999, 0]}), 400)
    error_of(post(client, "/api/rf", {"layer": layer, "position": "middle"}), 400)
    error_of(post(client, "/api/rf", {"layer": "nope", "position": [0, 0]}), 404)
    still_serving(client)


def test_top_patches_rank_the_data_set(client, session):
    layer = client.get("/api/info").json()["layer"]
    r = post(client, "/api/top", {"layer": layer, "channel": 2, "k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["images"] == 6 and len(body["patches"]) == 4
    values = [p["value"] for p in body["patches"]]
    assert values == sorted(values, reverse=True)
    assert len({p["sample"] for p in body["patches"]}) == 4  # one peak per image
    error_of(post(client, "/api/top", {"layer": layer, "channel": -1}), 400)
    error_of(post(client, "/api/top", {"layer": layer, "channel": 0, "k": 1000}), 400)
    still_serving(client)


# -- samples, paths, uploads ---------------------------------------------------------------------------------


def test_samples_by_index_and_by_path_inside_the_data_folder(client, data_dir):
    r = post(client, "/api/sample", {"index": 3})
    assert r.status_code == 200 and r.json()["base"] == "000003.png"
    name = sorted(p.name for p in data_dir.glob("*.png"))[1]
    r = post(client, "/api/sample", {"path": name})
    assert r.status_code == 200 and r.json()["base"] == name
    error_of(post(client, "/api/sample", {"index": 6}), 404)
    error_of(post(client, "/api/sample", {"index": "1"}), 400)
    error_of(post(client, "/api/sample", {"path": "missing.png"}), 404)
    error_of(post(client, "/api/sample", {}), 400)
    still_serving(client)


@pytest.mark.parametrize(
    "path", ["../outside.png", "/etc/passwd", "sub/../../outside.png", "link.png", "a\x00b"]
)
def test_paths_outside_the_data_folder_are_never_read(client, data_dir, lines, path):
    outside = data_dir.parent / "outside.png"
    lines[0].save(outside)  # a real, readable image: refusing it is the guard's doing, not a decode failure
    link = data_dir / "link.png"
    if not link.exists():
        os.symlink(outside, link)
    r = post(client, "/api/sample", {"path": path})
    assert r.status_code in (400, 403), r.text
    error_of(r, r.status_code)
    r = post(client, "/api/source", {"path": path})
    assert r.status_code in (400, 403)
    still_serving(client)


def test_upload_replaces_the_image_and_source_uploads_feed_paste(client, lines):
    im = lines[4].convert("RGB")  # colour is converted to the model's grey
    r = client.post("/api/upload", content=png_bytes(im), headers={"Content-Type": "image/png"})
    assert r.status_code == 200 and r.json()["ops"] == 0
    assert r.json()["image"]["height"] == 32
    r = client.post(
        "/api/upload?to=source",
        content=png_bytes(lines[5]),
        headers={"Content-Type": "application/octet-stream", "X-Filename": "src.png"},
    )
    assert r.status_code == 200 and r.json()["name"] == "src.png"


def test_non_image_bytes_are_refused(client):
    msg = error_of(
        client.post("/api/upload", content=b"#!/bin/sh\nrm -rf /\n", headers={"Content-Type": "image/png"}),
        400,
    )
    assert "not an image" in msg
    error_of(client.post("/api/upload", content=b"", headers={"Content-Type": "image/png"}), 400)
    error_of(
        client.post(
            "/api/upload",
            content=png_bytes(Image.new("L", (9, 9)))[:40],
            headers={"Content-Type": "image/png"},
        ),
        400,
    )  # truncated
    error_of(client.post("/api/upload", content=b"x", headers={"Content-Type": "text/plain"}), 415)
    error_of(
        client.post(
            "/api/upload?to=elsewhere",
            content=png_bytes(Image.new("L", (9, 9))),
            headers={"Content-Type": "image/png"},
        ),
        400,
    )
    still_serving(client)


def test_a_decompression_bomb_upload_is_a_400_naming_it(client, bomb_png):
    bomb = bomb_png
    assert len(bomb) < 100
    msg = error_of(client.post("/api/upload", content=bomb, headers={"Content-Type": "image/png"}), 400)
    assert msg.startswith("cannot read image the upload: ") and "decompression bomb" in msg
    msg = error_of(client.post("/api/upload?to=source", content=bomb, headers={"Content-Type": "image/png"}), 400)
    assert "decompression bomb" in msg
    still_serving(client)


def test_deeply_nested_json_is_a_400(client):
    deep = b'{"op": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    for path in ("/api/edit", "/api/view", "/api/rf", "/api/sample"):
        msg = error_of(client.post(path, content=deep, headers={"Content-Type": "application/json"}), 400)
        assert msg.startswith("the JSON body is nested too deeply")
    still_serving(client)


def test_blank_or_spaced_tokens_are_refused(session):
    for token in (" ", "\t", "  \n"):
        with pytest.raises(ValueError, match="^the token is blank: give a token of visible characters"):
            create_app(session, token=token)
    with pytest.raises(ValueError, match="holds spaces or control characters"):
        create_app(session, token="two words")
    create_app(session, token="s3cret-token")  # a real token is fine


def test_images_over_the_pixel_limit_are_refused_before_decoding(session, data_dir):
    # a 5000 x 4000 PNG is 20 MP but compresses to a few kB: the header is checked before pixels are read
    big = png_bytes(Image.new("L", (5000, 4000), 255))
    assert len(big) < 1 << 20
    with TestClient(create_app(session, data_root=data_dir, max_body=1 << 20), base_url=BASE) as c:
        old, session.max_pixels = session.max_pixels, 10_000_000
        try:
            msg = error_of(c.post("/api/upload", content=big, headers={"Content-Type": "image/png"}), 413)
            assert "20,000,000 pixels" in msg
        finally:
            session.max_pixels = old
        still_serving(c)


def test_oversized_bodies_are_refused(client):
    big = b"\0" * ((1 << 20) + 1)
    msg = error_of(client.post("/api/upload", content=big, headers={"Content-Type": "image/png"}), 413)
    assert "over the limit" in msg

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(20):
            yield b"\0" * 65536

    error_of(client.post("/api/upload", content=chunks(), headers={"Content-Type": "image/png"}), 413)
    error_of(
        client.post(
            "/api/edit", content=b"{" + b" " * (1 << 20) + b"}", headers={"Content-Type": "application/json"}
        ),
        413,
    )
    still_serving(client)


# -- JSON errors, methods, unknown endpoints -----------------------------------------------------------------


@pytest.mark.parametrize(
    "content, ctype, status",
    [
        (b"{not json", "application/json", 400),
        (b"[1, 2]", "application/json", 400),
        (b"\xff\xfe", "application/json", 400),
        (b'{"op": "undo"}', "text/plain", 415),  # a cross-site form cannot post JSON here
        (b'{"op": "undo"}', "", 415),
    ],
)
def test_malformed_json_requests_get_json_errors(client, content, ctype, status):
    headers = {"Content-Type": ctype} if ctype else {}
    error_of(client.post("/api/edit", content=content, headers=headers), status)
    still_serving(client)


def test_unknown_endpoints_and_methods_answer_json(client):
    assert "no such page" in error_of(client.get("/api/nope"), 404)
    error_of(client.get("/api/edit"), 405)
    error_of(client.get("/static/../app.py"), 404)
    error_of(client.get("/static/%2e%2e/app.py"), 404)
    still_serving(client)


# -- token and host ------------------------------------------------------------------------------------------


def test_token_is_required_on_every_request(session, data_dir):
    app = create_app(session, token="s3cret-token", allowed_hosts=None, data_root=data_dir)
    with TestClient(app, base_url="http://192.168.1.20:8000") as c:
        for path in ["/", "/api/info", "/api/state", "/static/app.js"]:
            assert "needs its token" in error_of(c.get(path), 403)
            assert "wrong token" in error_of(c.get(path, headers={"X-Dawnet-Token": "guess"}), 403)
        error_of(post(c, "/api/edit", {"op": "undo"}), 403)
        assert c.get("/api/info", headers={"X-Dawnet-Token": "s3cret-token"}).status_code == 200
        page = c.get("/?token=s3cret-token")
        assert page.status_code == 200 and TOKEN_COOKIE in page.headers["set-cookie"]
        assert 'src="static/app.js?token=s3cret-token"' in page.text  # iframes that get no cookie still load
        assert "httponly" in page.headers["set-cookie"].lower()
        assert c.get("/static/app.js").status_code == 200  # the cookie from the page load
        c.cookies.clear()
        error_of(c.get("/static/app.js"), 403)
        assert c.get("/api/info", headers={"Cookie": f"{TOKEN_COOKIE}=bad"}).status_code == 403


def test_loopback_server_refuses_other_host_names(client):
    assert "not served" in error_of(client.get("/api/info", headers={"Host": "evil.example:8000"}), 403)
    assert client.get("/api/info", headers={"Host": "localhost:1234"}).status_code == 200
    still_serving(client)


# -- other model kinds ---------------------------------------------------------------------------------------


@register_model("inspector_test_classifier")
class TinyClassifier(nn.Module):
    def __init__(self, classes: int = 7):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(8, 12, 3, padding=1),
            nn.ReLU(),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, classes))

    def forward(self, x):
        return self.head(self.features(x))


def test_a_classifier_checkpoint_shows_top_k_classes(tmp_path, lines):
    torch.manual_seed(0)
    model = TinyClassifier()
    agent = Agent(
        model,
        torch.optim.SGD(model.parameters(), 0.1),
        loss=nn.CrossEntropyLoss(),
        device="cpu",
        input={"channels": 1, "height": 28, "width": 28},
    )
    agent.save(tmp_path / "clf.pt")
    (tmp_path / "data" / "cats").mkdir(parents=True)
    for i in range(3):
        lines[i].save(tmp_path / "data" / "cats" / f"{i}.png")
    s = open_session(tmp_path / "clf.pt", data=tmp_path / "data")
    with TestClient(create_app(s, data_root=tmp_path / "data"), base_url=BASE) as c:
        info = c.get("/api/info").json()
        assert info["kind"] == "generic" and info["samples"] == 3
        state = c.get("/api/state").json()
        assert state["image"]["height"] == 28 and state["image"]["width"] == 28
        items = state["output"]["items"]
        assert state["output"]["kind"] == "topk" and len(items) == 5
        ps = [i["p"] for i in items]
        assert ps == sorted(ps, reverse=True) and 0 < sum(ps) <= 1.0 + 1e-6
        with torch.no_grad():
            want = model(agent.prepare(s.current_image()[0].numpy())[0]).softmax(-1)[0]
        assert items[0]["index"] == int(want.argmax()) and items[0]["p"] == pytest.approx(
            float(want.max()), rel=1e-5
        )
        r = post(c, "/api/edit", {"op": "stroke", "points": [[3, 3], [25, 25]], "width": 3})
        assert r.status_code == 200 and max(r.json()["delta"]["mean_abs_change"]) > 0
        assert post(c, "/api/top", {"layer": info["layer"], "channel": 1, "k": 2}).json()["images"] == 3
        # conv3 pos 2 <- pool cells 1..3 <- conv1 cells 2..7 <- input pixels 1..8, on both axes
        assert post(c, "/api/rf", {"layer": "features.3", "position": [2, 2]}).json()["box"] == [1, 1, 9, 9]


class _BoxAgent(Agent):
    """A detector-style agent: postprocess turns the objectness map into boxes around its strong cells."""

    def postprocess(self, outputs, inputs=()):
        obj = outputs[0, 0]
        ys, xs = torch.nonzero(obj > obj.mean(), as_tuple=True)
        boxes = torch.stack([xs * 2, ys * 2, xs * 2 + 2, ys * 2 + 2], 1).float()
        return {"boxes": boxes, "scores": obj[ys, xs]}


def test_agent_kinds_are_what_the_page_shows():
    from dawnet.inspector.outputs import agent_kind
    from dawnet.ocr.agents import AttentionAgent, CTCAgent
    from dawnet.ocr.detection import DetectionAgent

    kinds = [agent_kind(cls) for cls in (CTCAgent, AttentionAgent, DetectionAgent, Agent, _BoxAgent)]
    assert kinds == ["ctc", "attn", "detector", "generic", "generic"]


def test_a_detector_shows_boxes(lines):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(4, 5, 1))
    agent = _BoxAgent(model, torch.optim.SGD(model.parameters(), 0.1), device="cpu")
    s = Session(agent, image=lines[0])
    with TestClient(create_app(s), base_url=BASE) as c:
        out = c.get("/api/state").json()["output"]
    assert out["kind"] == "boxes" and out["count"] == len(out["boxes"]) > 0
    assert all(len(b["box"]) == 4 and b["score"] is not None for b in out["boxes"])


def test_a_blank_first_image_is_refused_with_a_message(crnn_checkpoint):
    from dawnet.inspector.errors import InspectorError

    with pytest.raises(InspectorError, match=r"^the first image \(image\) cannot be read by the model: .*blank"):
        open_session(crnn_checkpoint, image=Image.new("L", (200, 40), 255))


def test_a_blank_line_is_shown_as_an_output_message_not_a_failure(session):
    with TestClient(create_app(session), base_url=BASE) as c:
        r = c.post(
            "/api/upload",
            content=png_bytes(Image.new("L", (200, 40), 255)),
            headers={"Content-Type": "image/png"},
        )
        assert r.status_code == 200
        assert r.json()["output"]["kind"] == "error" and "blank" in r.json()["output"]["error"]
        r = post(c, "/api/edit", {"op": "stroke", "points": [[16, 10], [16, 120]], "width": 4})
        assert r.json()["output"]["kind"] == "text"  # something to read again
