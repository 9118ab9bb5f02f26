"""End to end in a real browser: Playwright drives Debian's chromium (``apt-get install chromium``;
Playwright never downloads a browser of its own). The page loads, a stroke is drawn with the mouse, a
slider is moved with the keyboard, and the rendered feature maps and the decoded text change each time."""

import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("uvicorn", reason="the inspector needs the `inspect` extra (starlette, uvicorn)")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="the browser test needs the `inspect` extra's playwright package"
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not Path(CHROMIUM).is_file(),
        reason="Debian's chromium is not installed (the project's set-up runs `apt-get install "
        "chromium`); Playwright is not allowed to download a browser of its own",
    ),
]


@pytest.fixture
def page(tmp_path):
    with playwright_api.sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=ARGS,
            viewport={"width": 1400, "height": 1000},
        )
        try:
            pg = context.new_page()
            errors = []
            pg.on("pageerror", lambda e: errors.append(str(e)))
            pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            pg.errors = errors
            yield pg
        finally:
            context.close()


def _wait(page, expression, timeout=60.0):
    """Poll ``expression`` from Python: the page's CSP (no eval) rules out Playwright's wait_for_function."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {expression}; page errors: {page.errors}")
        time.sleep(0.05)


def _settled(page, n):
    """Wait until the page has rendered at least ``n`` updates and has nothing in flight."""
    _wait(
        page,
        f"Number(document.body.dataset.updates || 0) >= {n} && !window.inspector.inflight && "
        "!window.inspector.pending",
    )
    return int(page.evaluate("document.body.dataset.updates"))


def _maps(page):
    return page.evaluate("[...document.querySelectorAll('#maps canvas')].map(c => c.toDataURL())")


def _text(page):
    return page.get_attribute("#output", "data-text")


def test_draw_a_stroke_move_a_slider_and_watch_maps_and_text_change(page, trained_checkpoint, data_dir):
    from dawnet.inspector import open_session
    from dawnet.inspector.server import InspectorServer

    session = open_session(trained_checkpoint, data=data_dir)
    with InspectorServer(
        session, token="browser-test-token"
    ) as server:  # a token exercises the cookie path too
        page.goto(server.url)
        n = _settled(page, 1)
        assert _text(page) == "hello"  # the trained model reads the first sample
        maps0, text0 = _maps(page), _text(page)
        assert len(maps0) == 16
        latency = page.text_content("#latency")
        assert "server" in latency and "ms" in latency and "target 150 ms" in latency

        # draw a thick stroke across the line with the mouse
        page.eval_on_selector("#pen-width", "e => { e.value = '8'; e.dispatchEvent(new Event('input')); }")
        box = page.locator("#overlay").bounding_box()
        y = box["y"] + box["height"] * 0.5
        page.mouse.move(box["x"] + 2, y)
        page.mouse.down()
        for i in range(1, 21):
            page.mouse.move(box["x"] + box["width"] * 0.9 * i / 20, y + (6 if i % 2 else -6))
        page.mouse.up()
        n = _settled(page, n + 1)
        maps1, text1 = _maps(page), _text(page)
        assert maps1 != maps0
        assert text1 != text0
        assert page.text_content("#sample-name").endswith("1 edit(s)")

        # move the rotation slider with the keyboard, as a user would
        page.focus("#aug-rotation")
        page.keyboard.press("End")
        n = _settled(page, n + 1)
        maps2, text2 = _maps(page), _text(page)
        assert page.input_value("#aug-rotation") == "30"
        assert maps2 != maps1
        assert text2 != text1

        # clicking a feature-map cell outlines its receptive field and ranks top patches
        page.locator("#maps canvas").first.click(position={"x": 3, "y": 3})
        _wait(page, "document.querySelectorAll('#top img').length > 0")
        assert "receptive field" in page.text_content("#rf-info")
        assert not page.errors, page.errors
