"""How long the ``dawnet`` command takes to start, before any real work: ``dawnet --help`` and ``dawnet CMD --help``.

Each case runs in a fresh interpreter (``python -m dawnet.cli ...``), ``--rounds`` times, interleaved with a bare
``python -c pass`` (the interpreter's own start, for scale) and ``python -c 'import torch'`` (what a
command's real work pays first); the median wall time is printed next to its target
(``dawnet --help`` <= 0.5 s, every command <= 1.5 s; issue 18) and the ratio time / target (<= 1 meets it). With
``--importtime`` the slowest imports of each case are listed (``python -X importtime``, cumulative), which names
the module to make lazy when a case misses its target.

    .venv/bin/python benchmarks/cli_startup.py [--rounds 5] [--commands eval read] [--importtime]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

TOP_TARGET_S = 0.5
COMMAND_TARGET_S = 1.5


def _time(argv: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - start


def _slowest_imports(args: list[str], n: int) -> list[tuple[float, str]]:
    """The ``n`` imports with the largest cumulative time (seconds, module) when running ``dawnet ARGS``; an
    import nested in another is indented under it, so the list reads as the chain that pulled it in."""
    out = subprocess.run([sys.executable, "-X", "importtime", "-m", "dawnet.cli", *args], capture_output=True,
                         text=True)
    rows = []
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line[len("import time:"):].split("|")
        rows.append((int(cumulative) / 1e6, name[1:].rstrip()))  # nested imports keep their indentation
    return sorted(rows, reverse=True)[:n]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="Runs of each case (default: 5; the median counts).")
    parser.add_argument("--commands", nargs="+", metavar="CMD",
                        help="Commands to time (default: every command dawnet has).")
    parser.add_argument("--importtime", action="store_true", help="Also list each case's 5 slowest imports.")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be >= 1, got {args.rounds}")

    from dawnet.cli import command_modules

    commands = args.commands or list(command_modules())
    cases = [("dawnet --help", ["--help"], TOP_TARGET_S)] + [
        (f"dawnet {c} --help", [c, "--help"], COMMAND_TARGET_S) for c in commands]
    bare = [sys.executable, "-c", "pass"]
    torch_only = [sys.executable, "-c", "import torch"]
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}
    baseline, torch_times = [], []
    for _ in range(args.rounds):  # interleaved, so a burst of load from elsewhere hits every case alike
        baseline.append(_time(bare))
        torch_times.append(_time(torch_only))
        for name, case_args, _ in cases:
            times[name].append(_time([sys.executable, "-m", "dawnet.cli", *case_args]))

    print(f"dawnet start-up, median of {args.rounds} runs (python -c pass: {statistics.median(baseline):.3f} s; "
          f"import torch: {statistics.median(torch_times):.3f} s, paid by a command's real work, not by its start)")
    print(f"{'case':<30} {'median s':>9} {'min s':>7} {'target s':>9} {'ratio':>6}")
    missed = 0
    for name, case_args, target in cases:
        med = statistics.median(times[name])
        missed += med > target
        print(f"{name:<30} {med:>9.3f} {min(times[name]):>7.3f} {target:>9.1f} {med / target:>6.2f}"
              f"{'' if med <= target else '  MISSED'}")
        if args.importtime:
            for seconds, module in _slowest_imports(case_args, 5):
                print(f"{'':<4}{seconds:>7.3f} s  import {module}")
    print(f"{len(cases) - missed} of {len(cases)} cases within their target")
    return 0


if __name__ == "__main__":
    sys.exit(main())
