"""The command line on inputs from elsewhere: sets saved by the DC and MTT code bases, evaluated by
``ddfast eval --source dc|mtt`` on files written as those code bases write them; and bad flag and ``--set``
values, each refused with a UsageError naming it before any data is loaded or folder written (printed as
``ddfast COMMAND: error: MESSAGE``, exit code 2)."""

from __future__ import annotations

import re
from dataclasses import fields

import numpy as np
import pytest
import torch

import ddfast
from ddfast.cli import _settings, main
from ddfast.data import load_dataset
from ddfast.eval import random_real_set
from ddfast.methods import DATASET_DEFAULTS, METHODS, make_config
from ddfast.usage import check_settings

QUICK_EVAL = ("--models", "MLP", "--preset", "quick", "--runs", "1", "--epochs", "1", "--no-baseline", "--quiet",
              "--device", "cpu")


@pytest.fixture(scope="module")
def digits_set():
    """One real digits image per class, as a distilled set of IPC 1 would hold them."""
    return random_real_set(load_dataset("digits"), 1, torch.Generator().manual_seed(0))


def _eval_table(capsys, *argv) -> str:
    with pytest.raises(SystemExit) as done:
        main(["eval", *argv, *QUICK_EVAL])
    assert done.value.code == 0
    return capsys.readouterr().out


def test_eval_of_a_dc_result_file(tmp_path, capsys, digits_set):
    # DC's main.py: data_save.append([image_syn.detach().cpu(), label_syn.detach().cpu()]) per experiment, then
    # torch.save({'data': data_save, 'accs_all_exps': accs_all_exps}, 'res_<method>_<dataset>_<model>_<ipc>ipc.pt')
    # with numpy float64 accuracies
    data_save = [[digits_set.images.clone(), digits_set.labels.clone()] for _ in range(2)]
    path = tmp_path / "res_DC_digits_ConvNet_1ipc.pt"
    torch.save({"data": data_save, "accs_all_exps": {"ConvNet": [np.float64(0.5), np.float64(0.6)]}}, path)
    table = _eval_table(capsys, str(path), "--source", "dc")
    assert "| MLP |" in table


@pytest.mark.parametrize("zca", [False, True], ids=["plain", "zca"])
def test_eval_of_an_mtt_run_folder(tmp_path, capsys, digits_set, zca):
    # MTT's distill.py: images_best.pt (image_syn, ZCA-space under --zca), labels_best.pt and lr_best.pt (syn_lr)
    # in logged_files/<dataset>/<wandb run name>/
    folder = tmp_path / "logged_files" / "digits" / "dainty-sun-7"
    folder.mkdir(parents=True)
    images = load_dataset("digits", zca=True).zca(digits_set.images) if zca else digits_set.images
    torch.save(images.clone(), folder / "images_best.pt")
    torch.save(digits_set.labels.clone(), folder / "labels_best.pt")
    torch.save(torch.tensor(0.01), folder / "lr_best.pt")
    table = _eval_table(capsys, str(folder), "--source", "mtt", *(("--zca",) if zca else ()))
    assert "| MLP |" in table


# ------------------------------------------------------------------------- values checked before any work

DISTILL = ("distill", "--method", "dm", "--ipc", "1", "--quiet", "--device", "cpu")
BAD_DISTILL = {
    "iterations": (("--iterations", "0"), r"--iterations must be an integer >= 1, got 0"),
    "ipc": (("--ipc", "0"), r"--ipc must be an integer >= 1, got 0"),
    "float_setting": (("--set", "lr_img=abc"), r"--set lr_img: expected a float, got 'abc'"),
    "int_setting": (("--set", "batch_real=2.5"), r"--set batch_real: expected an integer, got '2.5'"),
    "lr_range": (("--set", "lr_img=0"), r"--set lr_img must be a float > 0, got 0.0"),
    "probability": (("--set", "momentum=1.5"), r"--set momentum must be a float in \[0, 1\], got 1.5"),
    "choice_setting": (("--set", "model=NoSuchNet"), r"--set model must be one of \[.*'ConvNet'"),
    "unknown_key": (("--set", "no_such=1"),
                    r"--set no_such: method 'dm' has no such setting; valid keys: \[.*'lr_img'"),
    "no_equals": (("--set", "lr_img"), r"--set expects KEY=VALUE, got 'lr_img'"),
    "backend": (("--backend", "bogus"), r"--backend must be one of \['auto', 'reference', 'cpp', 'cuda', 'triton'\], "
                                        r"got 'bogus'"),
    "eval_model": (("--eval-model", "NoSuchNet"), r"--eval-model must be one of"),
    "eval_runs": (("--eval-runs", "0"), r"--eval-runs must be an integer >= 1, got 0"),
    "checkpoint_every": (("--checkpoint-every", "0"), r"--checkpoint-every must be an integer >= 1, got 0"),
    "eval_every": (("--eval-every", "-1"), r"--eval-every must be an integer >= 0, got -1"),
    "device": (("--device", "gpu0"), r"--device: expected a torch device"),
    "fixed": (("--method", "dsa", "--set", "dsa=false"), r"--set dsa: method 'dsa' fixes"),
}


@pytest.fixture
def no_data(monkeypatch):
    """Loading a dataset fails the test: every check must come first."""
    import ddfast.runner

    def refuse(*args, **kwargs):
        raise AssertionError("a dataset was loaded before the arguments were checked")

    monkeypatch.setattr(ddfast.runner, "load_dataset", refuse)


def _refused(capsys, argv) -> str:
    """The message of a usage error that ``ddfast ARGV`` printed (exit code 2, no traceback)."""
    with pytest.raises(SystemExit) as done:
        main(argv)
    err = capsys.readouterr().err
    prefix = f"ddfast {argv[0]}: error: "
    assert done.value.code == 2 and err.startswith(prefix) and "Traceback" not in err, err
    return err[len(prefix):]


@pytest.mark.parametrize("case", sorted(BAD_DISTILL))
def test_distill_rejects_a_bad_value_before_any_work(tmp_path, capsys, no_data, case):
    argv, message = BAD_DISTILL[case]
    out = tmp_path / "run"
    with pytest.raises(ddfast.UsageError, match=message) as raised:
        main(["--debug", *DISTILL, "--out", str(out), *argv])
    assert str(raised.value).startswith(raised.value.name)  # the flag or --set key it names
    assert re.match(message, _refused(capsys, [*DISTILL, "--out", str(out), *argv]))
    assert not out.exists()


BAD_EVAL = {
    "runs": (("--runs", "0"), r"--runs must be an integer >= 1, got 0"),
    "models": (("--models", "MLP,NoSuchNet"), r"--models must be one of \[.*\], got 'NoSuchNet'"),
    "lr": (("--lr", "-0.01"), r"--lr must be a float > 0, got -0.01"),
    "temperature": (("--temperature", "0"), r"--temperature must be a float > 0, got 0.0"),
}


@pytest.mark.parametrize("case", sorted(BAD_EVAL))
def test_eval_rejects_a_bad_value_before_any_work(tmp_path, capsys, no_data, digits_set, case):
    argv, message = BAD_EVAL[case]
    digits_set.save(tmp_path / "set.pt")
    assert re.match(message, _refused(capsys, ["eval", str(tmp_path / "set.pt"), "--quiet", "--device", "cpu", *argv]))


@pytest.mark.parametrize("argv, message", [(("--experts", "0"), r"--experts must be an integer >= 1, got 0"),
                                           (("--batch-size", "0"), r"--batch-size must be an integer >= 1, got 0"),
                                           (("--model", "NoSuchNet"), r"--model must be one of")])
def test_buffer_rejects_a_bad_value_before_any_work(tmp_path, capsys, no_data, argv, message):
    out = tmp_path / "buf"
    assert re.match(message, _refused(capsys, ["buffer", "--out", str(out), "--quiet", "--device", "cpu", *argv]))
    assert not out.exists()


def test_set_values_take_their_config_field_types():
    config = make_config("seqmatch", "digits", **_settings(["lr_img=2", "model=ConvNetD2", "dsa_strategy='none'",
                                                             "batch_syn=None", "intervals=[[0, 3], [1, 4]]",
                                                             "iterations=3"]))
    assert config.lr_img == 2.0 and isinstance(config.lr_img, float)
    assert (config.model, config.dsa_strategy, config.batch_syn) == ("ConvNetD2", "none", None)
    assert config.intervals == ((0, 3), (1, 4)) and config.iterations == 3
    assert make_config("ast", "digits", **_settings(["balanced=false"])).balanced is False
    assert isinstance(ddfast.UsageError("--x", "m"), ValueError)


def test_every_default_setting_is_accepted():
    """The rules do not refuse a value ddfast itself ships: each method's defaults, per dataset and ipc."""
    for key in [*DATASET_DEFAULTS, *((method, "cifar10") for method in METHODS)]:
        method, dataset, ipc = (*key, None)[:3]
        config = make_config(method, dataset, ipc=ipc)
        values = {f.name: getattr(config, f.name) for f in fields(config)}
        assert check_settings(method, values) == values, key
