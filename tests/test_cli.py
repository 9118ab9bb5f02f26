"""The dawnet command: --help and --version everywhere, JSON where scripts read it, errors and exit codes."""

import argparse
import json
import os
import subprocess
import sys

import pytest

import dawnet
import dawnet.commands.history
from dawnet.cli import build_parser, command_modules, main
from dawnet.commands._types import float_range, int_range, nonnegative_float, positive_float, positive_int
from dawnet.history import History


def _subparsers(parser: argparse.ArgumentParser) -> argparse.Action:
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))


def subcommands() -> list[str]:
    return sorted(_subparsers(build_parser()).choices)


def _dawnet(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dawnet.cli", *args], capture_output=True, text=True, **kw)


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out == f"dawnet {dawnet.__version__}\n"
    assert main([]) == 1  # no subcommand: help, exit 1
    out = capsys.readouterr().out
    assert out.startswith("usage: dawnet <command> [<args>]\n\ndawnet: train, measure and understand vision models")
    assert "exit status: 0 success, 1 partial failure" in out
    for name in subcommands():
        assert f"\n    {name} " in out or f"\n    {name}\n" in out  # every command listed with its help


def test_commands_are_found_from_the_module_names():
    assert command_modules()["lr-find"] == "lr_find"
    assert subcommands() == sorted(command_modules())
    assert "_types" not in command_modules().values()  # private modules are not commands
    # `dawnet eval ...` builds only the parser of eval (the others' modules need not even be imported)
    assert sorted(_subparsers(build_parser("eval")).choices) == ["eval"]
    assert sorted(_subparsers(build_parser("no-such-command")).choices) == subcommands()


@pytest.mark.parametrize("name", subcommands())
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: dawnet {name} ")  # not "usage: dawnet <command> [<args>] NAME ..."
    sub = _subparsers(build_parser(name)).choices[name]
    options = [s for a in sub._actions for s in a.option_strings if s.startswith("--")]
    assert options and [s for s in options if s not in out] == []  # every option is documented
    assert sub.description.split()[0] in out


def test_building_the_parser_imports_no_heavy_module():
    # `dawnet --help` must start in well under a second: no command module may import torch, numpy, PIL or the
    # library when it is imported or registers its parser (they do it inside run). benchmarks/cli_startup.py
    # measures the time; this checks the cause without timing anything.
    code = ("import sys; from dawnet.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'numpy', 'PIL', 'matplotlib', 'dawnet.agent', 'dawnet.ocr') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout == "[]\n"


def test_env_json(capsys):
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"dawnet", "torch", "python"} <= set(info)
    assert info["dawnet"] == dawnet.__version__


def test_console_script_runs():
    out = _dawnet("--version", check=True)
    assert out.stdout == f"dawnet {dawnet.__version__}\n"


def test_a_corrupt_checkpoint_is_one_line_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_text("garbage")
    assert main(["history", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dawnet: error: ") and "bad.pt is not a readable torch checkpoint" in err
    assert "Traceback" not in err and err.count("\n") == 1


def test_a_type_error_is_a_bug_and_shows_its_traceback(monkeypatch):
    # TypeError means a programming error, not bad input: main() must not turn it into a usage error (exit 2)
    def broken(args):
        return len(5)

    monkeypatch.setattr(dawnet.commands.history, "run", broken)
    with pytest.raises(TypeError, match="object of type 'int' has no len"):
        main(["history", "whatever.pt"])
    code = ("import sys, dawnet.commands.history as h; h.run = lambda args: len(5); from dawnet.cli import main; "
            "sys.exit(main(['history', 'whatever.pt']))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 1 and out.stdout == ""
    assert out.stderr.startswith("Traceback (most recent call last):")
    assert out.stderr.splitlines()[-1] == "TypeError: object of type 'int' has no len()"


@pytest.mark.parametrize("error, message", [
    (PermissionError(13, "Permission denied", "/data/lines"), "dawnet: error: /data/lines: Permission denied"),
    (FileExistsError(17, "File exists", "out.pt"), "dawnet: error: out.pt: File exists"),
    (LookupError("no model named 'crnx': did you mean 'crnn'?"), "dawnet: error: no model named 'crnx': did you "
                                                                 "mean 'crnn'?"),
    (ValueError("--size must be a multiple of 8"), "dawnet: error: --size must be a multiple of 8"),
])
def test_bad_input_errors_are_one_line_and_exit_2(monkeypatch, capsys, error, message):
    def failing(args):
        raise error

    monkeypatch.setattr(dawnet.commands.history, "run", failing)
    assert main(["history", "whatever.pt"]) == 2
    assert capsys.readouterr().err == message + "\n"


def _closed_pipe_run(args: list[str]) -> subprocess.CompletedProcess:
    """Run ``dawnet ARGS`` with its stdout a pipe whose reader is already gone (as ``| head -1`` leaves it)."""
    read, write = os.pipe()
    os.close(read)
    try:
        return subprocess.run([sys.executable, "-m", "dawnet.cli", *args], stdout=write, stderr=subprocess.PIPE,
                              text=True)
    finally:
        os.close(write)


def test_a_closed_stdout_exits_141_quietly(tmp_path):
    path = tmp_path / "history.json"
    History([{"step": i, "loss": 1.0 / (i + 1)} for i in range(3)], [{"epoch": 0, "val_loss": 0.5}]).to_json(path)
    out = _closed_pipe_run(["history", str(path)])
    assert (out.returncode, out.stderr) == (141, "")  # no BrokenPipeError traceback, no "Exception ignored"
    for args in (["--help"], ["history", "--help"], ["--version"]):  # argparse's own output: exit 0, quietly
        out = _closed_pipe_run(args)
        assert (out.returncode, out.stderr) == (0, ""), args
    out = _dawnet("history", str(path), check=True)  # with a reader it prints the summary
    assert out.stdout.splitlines()[0] == f"{path}: 3 steps, 1 epochs"


def test_range_types():
    assert positive_int("3") == 3 and positive_float("1e-3") == 1e-3 and nonnegative_float("0") == 0.0
    cases = [
        (positive_int, "0", "must be an integer >= 1, got 0"),
        (positive_int, "1.5", "must be an integer >= 1, got '1.5'"),
        (positive_float, "0", "must be a finite number > 0, got 0"),
        (positive_float, "nan", "must be a finite number > 0, got nan"),
        (nonnegative_float, "-inf", "must be a finite number >= 0, got -inf"),
        (float_range(0.0, 1.0, high_open=True), "1", "must be a finite number >= 0 and < 1, got 1"),
        (int_range(1, 8), "9", "must be an integer >= 1 and <= 8, got 9"),
        (int_range(), "x", "must be an integer, got 'x'"),
    ]
    for parse, text, message in cases:
        with pytest.raises(argparse.ArgumentTypeError) as e:
            parse(text)
        assert str(e.value) == message
    assert float_range(0.0, 1.0, high_open=True)("0.98") == 0.98
