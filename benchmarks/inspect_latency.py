"""Update latency of the live inspector for the CRNN on a CPU (target: 150 ms per change).

Each change the page sends (a pen stroke, a slider move, a layer switch) is timed over real HTTP against the
running server (uvicorn + httpx, as the browser sees it, JSON decoding included) and, side by side in the same
run, the bare model forward on the same image, so the ratio shows what the inspector adds to the model itself.

    .venv/bin/python benchmarks/inspect_latency.py [--repeats 30] [--width 400] [--threads 1]

Prints the machine's load (``os.getloadavg``) with the numbers: on a shared machine they move with it.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import httpx2 as httpx
import torch

import dawnet.ocr.models  # noqa: F401  (registers the presets)
from dawnet.inspector.server import InspectorServer
from dawnet.inspector.session import Session
from dawnet.ocr.agents import CTCAgent
from dawnet.ocr.charset import Charset
from dawnet.ocr.data.fonts import find_fonts
from dawnet.ocr.data.synth import LineSynthesizer
from dawnet.registry import create_model

TEXT = "The quick brown fox jumps over the lazy dog 0123456789"
TARGET_MS = 150.0


def line_image(width: int):
    fonts = [f for f in find_fonts() if f.covers(TEXT)][:1]
    if not fonts:
        raise SystemExit("no installed handwriting font covers the benchmark text: run the project's set-up")
    im = LineSynthesizer(fonts).render(TEXT, seed=0).image
    return im.resize((round(im.width * 32 / im.height), 32)).crop((0, 0, width, 32))


def stats(samples: list[float]) -> tuple[float, float]:
    s = sorted(samples)
    return statistics.median(s), s[min(len(s) - 1, int(0.9 * len(s)))]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--repeats", type=int, default=30, help="Timed requests per kind of change (default: 30)."
    )
    ap.add_argument("--width", type=int, default=400, help="Line width in px at height 32 (default: 400).")
    ap.add_argument(
        "--threads", type=int, default=1, help="PyTorch CPU threads (default: 1, the CLI's default)."
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    charset = Charset(" !\"#&'()*+,-./0123456789:;?ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
    model = create_model("crnn_medium", num_classes=charset.num_ctc_classes)
    agent = CTCAgent(model, torch.optim.Adam(model.parameters()), charset=charset, device="cpu")
    session = Session(agent, image=line_image(args.width), name="crnn_medium")
    h, w = session.base.shape[-2:]

    # the bare forward on the same input, for the ratio
    x, widths = agent.prepare(session.base[0].numpy())
    model.eval()
    bare = []
    with torch.no_grad():
        for _ in range(5):
            model(x, widths)
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            model(x, widths)
            bare.append((time.perf_counter() - t0) * 1e3)

    changes = {
        "pen stroke": lambda i: (
            "edit",
            {
                "op": "stroke",
                "points": [[4 + i % 24, 10], [20, 10 + 7 * (i % 40)]],
                "width": 3,
                "mode": "pen",
            },
        ),
        "blur slider": lambda i: ("view", {"augment": {"blur": 0.2 + 0.1 * (i % 20)}}),
        "rotation slider": lambda i: ("view", {"augment": {"blur": 0.0, "rotation": -15 + i % 30}}),
        "noise slider": lambda i: ("view", {"augment": {"rotation": 0.0, "noise": 0.01 * (1 + i % 30)}}),
        "elastic slider": lambda i: ("view", {"augment": {"noise": 0.0, "elastic": 1 + i % 10}}),
        "layer switch": lambda i: (
            "view",
            {
                "augment": {"elastic": 0.0},
                "layer": ["backbone.layers.2.2", "backbone.layers.8.2", "seq"][i % 3],
            },
        ),
    }
    rows = []
    with InspectorServer(session) as server, httpx.Client(base_url=server.url, timeout=60) as client:
        client.get("api/state").raise_for_status()  # warm-up: caches the original image's activations
        for name, make in changes.items():
            for i in range(3):
                client.post(f"api/{make(i)[0]}", json=make(i)[1]).raise_for_status()
            server_ms, trip_ms = [], []
            for i in range(args.repeats):
                path, body = make(i + 3)
                t0 = time.perf_counter()
                r = client.post(f"api/{path}", json=body)
                trip_ms.append((time.perf_counter() - t0) * 1e3)
                r.raise_for_status()
                server_ms.append(r.json()["timing"]["total_ms"])
            rows.append((name, *stats(server_ms), *stats(trip_ms)))
            if name == "pen stroke":
                client.post("api/edit", json={"op": "reset"}).raise_for_status()

    bare_med, bare_p90 = stats(bare)
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(
        f"dawnet inspector update latency: crnn_medium ({sum(p.numel() for p in model.parameters()) / 1e6:.2f} M "
        "params), "
        f"one {h}x{w} line, CPU, {torch.get_num_threads()} thread(s), {os.cpu_count()} cores, "
        f"load average {load}"
    )
    print(f"bare model forward: median {bare_med:.1f} ms, p90 {bare_p90:.1f} ms ({args.repeats} runs)")
    print(
        f"{'change':<17} {'server med':>10} {'server p90':>10} {'HTTP med':>9} {'HTTP p90':>9} "
        f"{'target/HTTP med':>15} {'HTTP med/bare':>13}"
    )
    for name, s_med, s_p90, t_med, t_p90 in rows:
        print(
            f"{name:<17} {s_med:>8.1f}ms {s_p90:>8.1f}ms {t_med:>7.1f}ms {t_p90:>7.1f}ms "
            f"{TARGET_MS / t_med:>14.2f}x {t_med / bare_med:>12.2f}x"
        )
    worst = max(r[4] for r in rows)
    verdict = "meets" if worst <= TARGET_MS else "misses"
    print(f"worst HTTP p90 {worst:.1f} ms {verdict} the {TARGET_MS:.0f} ms target")


if __name__ == "__main__":
    main()
