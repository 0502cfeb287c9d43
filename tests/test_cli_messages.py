"""What the command line says to a person: an expected error as one message naming the flag or key and what
would work (exit 2 for usage, 1 otherwise), its traceback only with --debug; --show-config; the help texts;
quickstart's progress lines; and setup.py's message when torch is missing."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

import ddfast
import ddfast.runner
from ddfast.cli import QUICKSTART, build_parser, main
from ddfast.methods import METHODS

ROOT = Path(__file__).resolve().parent.parent
DISTILL = ["distill", "--method", "dm", "--ipc", "1", "--quiet", "--device", "cpu"]


def _exit(capsys, argv) -> tuple[int, str]:
    """The exit code and stderr of ``ddfast ARGV``."""
    with pytest.raises(SystemExit) as done:
        main(argv)
    return done.value.code, capsys.readouterr().err


def test_an_unknown_set_key_is_one_line_with_a_suggestion(tmp_path, capsys):
    code, err = _exit(capsys, [*DISTILL, "--out", str(tmp_path / "run"), "--set", "lr_im=1"])
    assert code == 2
    assert err.startswith("ddfast distill: error: --set lr_im (did you mean 'lr_img'?): method 'dm' has no such "
                          "setting"), err
    assert "--show-config" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert not (tmp_path / "run").exists()


def test_an_unknown_dataset_names_the_flag_and_the_closest_name(tmp_path, capsys):
    code, err = _exit(capsys, [*DISTILL, "--out", str(tmp_path / "run"), "--dataset", "cifr10"])
    assert code == 2 and "Traceback" not in err
    assert err.startswith("ddfast distill: error: --dataset must be one of") and "(did you mean 'cifar10'?)" in err


def test_a_missing_dataset_names_the_data_root_flag(tmp_path, capsys):
    code, err = _exit(capsys, [*DISTILL, "--out", str(tmp_path / "run"), "--dataset", "cifar10",
                               "--data-root", str(tmp_path / "data")])
    assert code == 1 and "Traceback" not in err
    assert err.startswith("ddfast distill: error: cifar10: expected") and "--data-root" in err
    assert not (tmp_path / "run").exists()


def test_a_held_folder_is_one_message(tmp_path, capsys):
    from ddfast import _io

    with _io.run_folder(tmp_path / "run"):
        code, err = _exit(capsys, [*DISTILL, "--out", str(tmp_path / "run")])
    assert code == 1 and "Traceback" not in err
    assert err.startswith("ddfast distill: error: ") and "in use by another ddfast run" in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_debug_lets_the_error_raise_with_its_traceback(tmp_path, where):
    argv = [*DISTILL, "--out", str(tmp_path / "run"), "--set", "lr_im=1"]
    with pytest.raises(ddfast.UsageError, match="lr_im"):
        main(["--debug", *argv] if where == "before" else [*argv, "--debug"])


def test_debug_prints_the_traceback_from_the_command(tmp_path):
    argv = [sys.executable, "-m", "ddfast", *DISTILL, "--out", str(tmp_path / "run"), "--set", "lr_im=1"]
    plain = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT)
    debug = subprocess.run([*argv, "--debug"], capture_output=True, text=True, cwd=ROOT)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr, plain.stderr
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "check_settings" in debug.stderr, debug.stderr


def test_an_unexpected_error_keeps_its_traceback(tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(ddfast.runner, "distill_run", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main([*DISTILL, "--out", str(tmp_path / "run")])


def test_missing_cli_extras_name_the_checkout_install(tmp_path, capsys, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tqdm" else find_spec(name, *a))
    code, err = _exit(capsys, [*DISTILL, "--iterations", "1", "--out", str(tmp_path / "run")])
    assert code == 1 and "Traceback" not in err
    assert "ddfast distill needs tqdm: pip install tqdm (in a ddfast checkout: pip install -e '.[cli]' " \
           "--no-build-isolation)" in err, err


def test_show_config_lists_every_setting_with_its_value_and_meaning(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as done:  # no --out needed: nothing runs, nothing is written
        main(["distill", "--method", "dm", "--ipc", "1", "--set", "lr_img=0.5", "--show-config"])
    out = capsys.readouterr().out
    assert done.value.code == 0 and list(tmp_path.iterdir()) == []
    assert out.startswith("dm on digits, IPC 1:")
    listed = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert set(listed) == {f.name for f in fields(METHODS["dm"].config)}
    assert re.search(r"iterations\s+200\s+outer iterations .*\[paper default 20000\]", listed["iterations"])
    assert re.search(r"lr_img\s+0\.5\s+learning rate of the synthetic images", listed["lr_img"])
    assert re.search(r"forward\s+'auto'\s+how features are computed", listed["forward"])  # the field's comment


def _subparser(name: str) -> argparse.ArgumentParser:
    actions = build_parser()._subparsers._group_actions[0]
    return actions.choices[name]


@pytest.mark.parametrize("command", ["distill", "eval", "buffer", "teacher", "quickstart", "bench"])
def test_every_option_has_help(command):
    undocumented = [action.option_strings for action in _subparser(command)._actions
                    if action.option_strings and not action.help]
    assert undocumented == []


def test_help_texts_are_whole_sentences_without_markup(capsys):
    parser = build_parser()
    assert "``" not in parser.description and parser.description.rstrip().endswith(".")
    distill = _subparser("distill")
    assert distill.description and "examples:" in distill.epilog and "--show-config" in distill.epilog
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    text = capsys.readouterr().out
    assert "ddfast distill --method dm --dataset digits --ipc 10 --out runs/dm10" in text  # the epilog keeps lines


def _fake_run(method, dataset, ipc, out, **kwargs):
    Path(out).mkdir(parents=True)
    accuracy = {"mean": 0.9, "std": 0.01, "runs": 2, "preset": "quick"}
    return {"method": method, "dataset": dataset, "ipc": ipc, "iterations": 2, "seconds": 1.0,
            "distilled": accuracy, "random_real": {**accuracy, "mean": 0.7}}


@pytest.mark.parametrize("quiet", [True, False], ids=["quiet", "bars"])
def test_quickstart_reports_each_run_where_it_went_and_a_verdict(tmp_path, capsys, monkeypatch, quiet):
    monkeypatch.setattr(ddfast.runner, "distill_run", _fake_run)
    with pytest.raises(SystemExit) as done:
        main(["quickstart", "--out", str(tmp_path), *(["--quiet"] if quiet else [])])
    out = capsys.readouterr().out
    assert done.value.code == 0
    for number, (method, ipc) in enumerate(QUICKSTART, 1):
        label = re.escape(f"{method.upper()} IPC {ipc} ({number}/{len(QUICKSTART)})")
        where = re.escape(str(tmp_path / f"{method}_ipc{ipc}"))
        pattern = rf"^{label} -> {where} \.\.\. \d+ s$" if quiet else rf"^{label} -> {where} \.\.\.\n{label}: \d+ s$"
        assert re.search(pattern, out, re.MULTILINE), out
    assert "| verdict |" in out and out.count("| beats (") == len(QUICKSTART)
    assert f"run folders (set.pt, set.png, loss.png, results.json) in {tmp_path}/" in out


def test_setup_py_without_torch_says_what_to_install():
    script = ("import runpy, sys; sys.modules['torch'] = None; sys.argv = ['setup.py', '--version']; "
              "runpy.run_path('setup.py', run_name='__main__')")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "setup.py: ddfast builds against PyTorch and this Python has no torch: install it first (CPU: pip install "
        "torch --index-url https://download.pytorch.org/whl/cpu; CUDA: pip install torch), then pip install "
        "setuptools ninja and pip install -e '.[cli]' --no-build-isolation (README, \"Use ddfast in your own code\")"]
