"""The real server (uvicorn on a socket): loopback by default, a token elsewhere, show(), the CLI."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="the inspector needs the `inspect` extra (starlette, uvicorn)")
pytest.importorskip("httpx2", reason="the server tests need httpx2 (the `inspect` extra)")
import httpx2 as httpx  # noqa: E402  (the HTTP client Starlette 1.x tests with)

from dawnet import cli  # noqa: E402
from dawnet.inspector import InspectorHandle, open_session, show  # noqa: E402
from dawnet.inspector.server import InspectorServer, is_loopback  # noqa: E402


@pytest.fixture(scope="module")
def session(crnn_checkpoint, data_dir):
    return open_session(crnn_checkpoint, data=data_dir)


def test_loopback_names():
    assert (
        is_loopback("127.0.0.1")
        and is_loopback("localhost")
        and is_loopback("::1")
        and is_loopback("127.0.0.2")
    )
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.2") and not is_loopback("example.org")


def test_server_binds_loopback_on_a_free_port_without_a_token(session):
    with InspectorServer(session) as server:
        assert server.port > 0 and server.token is None
        assert server.url == f"http://127.0.0.1:{server.port}/"
        r = httpx.get(server.url + "api/info", timeout=30)
        assert r.status_code == 200 and r.json()["kind"] == "ctc"
        # a bad request, then the server still answers
        assert (
            httpx.post(
                server.url + "api/edit",
                content=b"{",
                headers={"Content-Type": "application/json"},
                timeout=30,
            ).status_code
            == 400
        )
        assert httpx.get(server.url + "api/state", timeout=30).status_code == 200
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{server.port}/api/info", timeout=5)


def test_connections_are_tcp_so_asyncio_turns_nagle_off(session):
    # asyncio sets TCP_NODELAY only on sockets whose proto is IPPROTO_TCP; with proto 0 each JSON answer
    # (headers and body sent apart) waited ~40 ms for the client's delayed ACK
    with InspectorServer(session) as server:
        assert server._sock.proto == socket.IPPROTO_TCP
        with socket.create_connection(("127.0.0.1", server.port)) as client:
            client.sendall(b"GET /api/samples HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert client.recv(65536).startswith(b"HTTP/1.1 200")


def test_any_other_address_gets_a_generated_token(session):
    with InspectorServer(session, host="0.0.0.0") as server:
        assert server.token and len(server.token) >= 24
        assert f"?token={server.token}" in server.url
        base = f"http://127.0.0.1:{server.port}/"
        assert httpx.get(base + "api/info", timeout=30).status_code == 403
        assert httpx.get(base + "api/info", headers={"X-Dawnet-Token": "nope"}, timeout=30).status_code == 403
        assert httpx.get(base + f"api/info?token={server.token}", timeout=30).status_code == 200
    with pytest.raises(ValueError, match="needs a token"):
        InspectorServer(session, host="0.0.0.0", token="")
    with pytest.raises(ValueError, match="the token is blank"):
        InspectorServer(session, host="127.0.0.1", token=" ")
    other = InspectorServer(session, host="0.0.0.0")
    assert other.token != server.token  # generated afresh each time
    other.stop()


def test_a_taken_port_is_a_clear_error(session):
    with InspectorServer(session) as server:
        with pytest.raises(OSError, match="pick another --port"):
            InspectorServer(session, port=server.port)


def test_show_runs_in_the_background_and_embeds_the_page(crnn_checkpoint, data_dir):
    handle = show(crnn_checkpoint, data=data_dir)
    try:
        assert isinstance(handle, InspectorHandle)
        html = handle._repr_html_()
        assert "<iframe" in html and handle.url in html
        assert httpx.get(handle.url, timeout=30).status_code == 200
        assert httpx.get(handle.url + "api/state", timeout=30).json()["output"]["kind"] == "text"
    finally:
        handle.stop()
    with pytest.raises(TypeError, match="dawnet.Agent or a checkpoint"):
        show(42)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        show(data_dir / "missing.pt")


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--port", "70000"], "argument --port: must be an integer >= 0 and <= 65535, got 70000"),
        (["--max-upload-mb", "0"], "argument --max-upload-mb: must be a finite number > 0, got 0"),
        (["--max-pixels", "-5"], "argument --max-pixels: must be an integer >= 1, got -5"),
        (["--top-images", "0"], "argument --top-images: must be an integer >= 1, got 0"),
    ],
)
def test_cli_checks_option_ranges_first(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["inspect", str(tmp_path / "never-read.pt"), *argv])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == f"dawnet inspect: error: {message}"


def test_cli_refuses_bad_input_with_a_message(tmp_path, crnn_checkpoint, capsys, bomb_png):
    assert cli.main(["inspect", str(tmp_path / "nope.pt")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["inspect", str(crnn_checkpoint), "--image", str(tmp_path / "no.png")]) == 2
    assert "no.png does not exist" in capsys.readouterr().err
    assert cli.main(["inspect", str(crnn_checkpoint), "--data", str(tmp_path / "nodata")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["inspect", str(crnn_checkpoint), "--layer", "backbone.layerz"]) == 2
    assert "no layer named" in capsys.readouterr().err
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    assert cli.main(["inspect", str(tmp_path / "bad.pt")]) == 2
    assert "bad.pt" in capsys.readouterr().err
    assert cli.main(["inspect", str(crnn_checkpoint), "--token", " "]) == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines() == ["dawnet: error: --token: the token is blank: give a token of visible "
                                        "characters (or none to generate one)"]
    (tmp_path / "bomb.png").write_bytes(bomb_png)
    assert cli.main(["inspect", str(crnn_checkpoint), "--image", str(tmp_path / "bomb.png")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "bomb.png" in err and "decompression bomb" in err


@pytest.mark.slow
def test_cli_serves_until_stopped(crnn_checkpoint, data_dir, lines, tmp_path):
    image = tmp_path / "line.png"
    lines[3].save(image)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dawnet.cli",
            "inspect",
            str(crnn_checkpoint),
            "--data",
            str(data_dir),
            "--image",
            str(image),
            "--json",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        started = json.loads(line)
        assert started["host"] == "127.0.0.1" and started["token"] is None
        state = httpx.get(started["url"] + "api/state", timeout=60).json()
        assert state["base"] == "line.png"
        assert httpx.get(started["url"] + "api/info", timeout=60).json()["samples"] == 6
    finally:
        proc.terminate()
        proc.wait(timeout=30)
