"""The command line on inputs from elsewhere: sets saved by the DC and MTT code bases, evaluated by
``ddfast eval --source dc|mtt`` on files written as those code bases write them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddfast.cli import main
from ddfast.data import load_dataset
from ddfast.eval import random_real_set

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

