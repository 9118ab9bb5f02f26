"""Environment facts: one module for `dawnet env` and the bench's machine block."""

import importlib.metadata as md
import json
import os
import platform

import torch

import dawnet
from dawnet.cli import main
from dawnet.environment import cpu_model, environment, library_versions, load_average, machine


def test_machine_block_names_the_device_cpu_and_threads():
    info = machine(torch.device("cpu"))
    assert info["device"] == "cpu" and info["cpu_count"] == os.cpu_count()
    assert info["torch_threads"] == torch.get_num_threads() and info["python"] == platform.python_version()
    assert info.get("cpu_model") == cpu_model() and "gpu" not in info
    la = load_average()
    assert la is None or (len(la) == 3 and all(round(v, 2) == v for v in la))


def test_versions_and_env_agree_with_the_installed_packages(capsys):
    v = library_versions()
    assert v["dawnet"] == dawnet.__version__ and v["torch"] == torch.__version__
    assert v["numpy"] == md.version("numpy")
    env = environment()
    assert env["torch"] == v["torch"] and env["cpu_count"] == os.cpu_count() and env["cpu_model"] == cpu_model()
    assert main(["env", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == {**env, "torch_threads": printed["torch_threads"]}
