"""The dawnet command: --help and --version everywhere, JSON where scripts read it."""

import json
import subprocess
import sys

import pytest

from dawnet.cli import build_parser, main


def subcommands() -> list[str]:
    parser = build_parser()
    action = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    return sorted(action.choices)


def test_version_and_help(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("dawnet ")
    assert main([]) == 1  # no subcommand: help, exit 1
    assert "<command>" in capsys.readouterr().out


@pytest.mark.parametrize("name", subcommands())
def test_every_subcommand_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert len(capsys.readouterr().out) > 100


def test_env_json(capsys):
    assert main(["env", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert {"dawnet", "torch", "python"} <= set(info)


def test_console_script_runs():
    out = subprocess.run([sys.executable, "-m", "dawnet.cli", "--version"], capture_output=True, text=True, check=True)
    assert out.stdout.startswith("dawnet ")


def test_a_corrupt_checkpoint_is_one_line_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_text("garbage")
    assert main(["history", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dawnet: error: ") and "bad.pt is not a readable torch checkpoint" in err
    assert "Traceback" not in err
