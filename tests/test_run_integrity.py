"""The failure model of runs and files: the lock a run holds on its folder, write access checked before any work,
no folder left by a failed start, checksums in ddfast's files, errors naming broken files, the umask, orphan
temporary files, and what a resume refuses or records (including a run killed between a checkpoint's temporary
write and its rename, resumed bit for bit)."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ddfast import _io
from ddfast.data import load_dataset
from ddfast.experts import load_buffer, save_buffer
from ddfast.methods import METHODS, make_config
from ddfast.methods import _common as common
from ddfast.methods.sre2l import TeacherRecipe, load_teacher, save_teacher
from ddfast.models import get_network
from ddfast.runner import distill_run, job_run_folder
from ddfast.synthetic import FORMAT, SyntheticSet

from spawn_ranks import run_ranks

TINY = {"model": "ConvNetD1", "batch_real": 8, "dsa_strategy": "none"}  # dm: seconds per run
TINY_CLI = ["--method", "dm", "--ipc", "1", "--iterations", "2", "--eval-runs", "1", "--eval-epochs", "2", "--quiet",
            "--device", "cpu", "--checkpoint-every", "1", "--set", "model='ConvNetD1'", "--set", "batch_real=8",
            "--set", "dsa_strategy='none'"]


@pytest.fixture(scope="module")
def digits8():
    return load_dataset("digits", im_size=8)


def _run(out, **kwargs):
    """A tiny DM run of ``ddfast distill`` into ``out``."""
    options = dict(iterations=2, device="cpu", eval_runs=1, eval_epochs=2, settings=TINY, progress=False,
                   checkpoint_every=1)
    return distill_run("dm", "digits", 1, out, **{**options, **kwargs})


# ------------------------------------------------------------------------------------------- the three formats

def _write_set(path, _data):
    SyntheticSet(torch.randn(3, 1, 8, 8), torch.arange(3), metadata={"method": "dm"}).save(path)


def _read_set(path, _data):
    return SyntheticSet.load(path)


def _write_checkpoint(path, _data):
    state = common.LoopState({"images": torch.randn(3, 1, 8, 8)}, {}, iteration=1, history=[0.5])
    common.Checkpointing(path).save("dm", make_config("dm", "digits", ipc=1, iterations=2), state)


def _read_checkpoint(path, _data):
    return common.read_checkpoint(common.Checkpointing(path, resume=True), "dm",
                                  make_config("dm", "digits", ipc=1, iterations=2))


def _write_teacher(path, data):
    net = get_network("ConvNetBN", data.channels, data.num_classes, tuple(data.im_size))
    save_teacher(path, net, data, TeacherRecipe(model="ConvNetBN"), seed=0, accuracy=0.5)


def _read_teacher(path, data):
    return load_teacher(path, data)


FORMATS = {"set": (_write_set, _read_set, "synthetic set"), "checkpoint": (_write_checkpoint, _read_checkpoint,
                                                                            "checkpoint"),
           "teacher": (_write_teacher, _read_teacher, "teacher")}


def _flip_a_bit_in(path: Path, payload_tensor: torch.Tensor) -> None:
    """Flip one bit inside ``payload_tensor``'s bytes as stored in ``path`` (torch.save stores them uncompressed)."""
    raw = bytearray(path.read_bytes())
    at = bytes(raw).find(payload_tensor.contiguous().view(torch.uint8).numpy().tobytes())
    assert at > 0, "the tensor's bytes are not in the file"
    raw[at + payload_tensor.numel() * payload_tensor.element_size() // 2] ^= 0x10
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("kind", FORMATS)
def test_a_flipped_bit_is_refused_naming_the_file(tmp_path, digits8, kind):
    write, read, _ = FORMATS[kind]
    path = tmp_path / f"{kind}.pt"
    write(path, digits8)
    stored = torch.load(path, weights_only=True)
    tensors = [v for v in _leaves(stored) if isinstance(v, torch.Tensor) and v.is_floating_point()]
    _flip_a_bit_in(path, max(tensors, key=torch.Tensor.numel))
    torch.load(path, weights_only=True)  # torch itself does not notice
    with pytest.raises(ValueError, match=f"{kind}.pt.* is corrupted: the checksum"):
        read(path, digits8)


def _leaves(value):
    if isinstance(value, dict):
        for item in value.values():
            yield from _leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _leaves(item)
    else:
        yield value


@pytest.mark.parametrize("damage", ["truncated", "empty", "garbage"])
@pytest.mark.parametrize("kind", [*FORMATS, "buffer"])
def test_a_broken_file_is_an_error_naming_it_and_what_it_should_be(tmp_path, digits8, kind, damage):
    path = tmp_path / f"{kind}.pt"
    if kind == "buffer":
        save_buffer(path, [[[torch.randn(4, 3)] for _ in range(3)]])
        read, what = (lambda p, _data: load_buffer(p)), "expert buffer"
    else:
        write, read, what = FORMATS[kind]
        write(path, digits8)
    raw = path.read_bytes()
    path.write_bytes({"truncated": raw[:len(raw) // 2], "empty": b"", "garbage": os.urandom(len(raw))}[damage])
    with pytest.raises(ValueError, match=f"{kind}.pt.*{what}") as info:
        read(path, digits8)
    assert "empty, truncated or not such a file" in str(info.value)


def test_a_set_written_without_a_checksum_loads_with_a_warning(tmp_path):
    path = tmp_path / "set.pt"
    torch.save({"format": FORMAT, "version": 1, "images": torch.zeros(2, 1, 4, 4), "labels": torch.arange(2),
                "lr": None, "metadata": {}}, path)  # what ddfast wrote before sets had a checksum
    with pytest.warns(UserWarning, match="set.pt.*has no checksum"):
        syn = SyntheticSet.load(path)
    assert syn.images.shape == (2, 1, 4, 4)


@pytest.mark.parametrize("umask", [0o022, 0o027])
def test_written_files_honour_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        _write_set(tmp_path / "set.pt", None)
        _io.atomic_write_text(tmp_path / "results.json", "{}\n")
    finally:
        os.umask(old)
    for name in ("set.pt", "results.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


# ------------------------------------------------------------------------------------------------ run folders

def test_a_held_run_folder_is_refused_naming_its_holder_and_force_takes_it(tmp_path):
    out = tmp_path / "run"
    with _io.run_folder(out):  # another run holds it (this process: alive, this host)
        with pytest.raises(FileExistsError, match=f"in use by another ddfast run \\(pid {os.getpid()} on "
                                                  f"{socket.gethostname()}"):
            _run(out)
        assert sorted(p.name for p in out.iterdir()) == [_io.LOCK_NAME]  # the refused run wrote nothing
        results = _run(out, force=True)
    assert results["iterations"] == 2 and (out / "results.json").exists()
    assert not (out / _io.LOCK_NAME).exists()


def test_a_second_ddfast_distill_on_a_held_folder_exits_with_an_error(tmp_path):
    with _io.run_folder(tmp_path / "run"):
        done = _distill_cli(tmp_path / "run")
    assert done.returncode == 1 and f"in use by another ddfast run (pid {os.getpid()}" in done.stderr, done.stderr
    assert done.stderr.startswith("ddfast distill: error: ") and "Traceback" not in done.stderr, done.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == []


def test_a_lock_counts_as_stale_only_on_this_host_with_a_dead_pid(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True)
    lock = tmp_path / _io.LOCK_NAME
    lock.write_text(json.dumps({"host": "elsewhere", "pid": int(dead.stdout), "started": "then", "token": "x"}))
    with pytest.raises(FileExistsError, match="pid .* on elsewhere"):
        with _io.run_folder(tmp_path):
            pass
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": int(dead.stdout), "started": "then",
                                "token": "x"}))
    with _io.run_folder(tmp_path):
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def _take_folder_job(ctx, folder):
    with job_run_folder(Path(folder) / "run", ctx):
        holder = json.loads((Path(folder) / "run" / _io.LOCK_NAME).read_text())
        ctx.barrier()  # every rank has read the lock
    return {"holder": holder["pid"], "pid": os.getpid()}


def test_under_several_ranks_rank_0_takes_the_folder_and_a_refusal_stops_every_rank(tmp_path):
    reports = run_ranks(_take_folder_job, tmp_path)
    assert [r.get("crash") for r in reports] == [None, None], reports
    assert reports[0]["holder"] == reports[1]["holder"] == reports[0]["pid"]
    with _io.run_folder(tmp_path / "run"):
        reports = run_ranks(_take_folder_job, tmp_path)
    assert "in use by another ddfast run" in reports[0]["crash"], reports[0]
    assert "rank 0 could not take the run folder" in reports[1]["crash"], reports[1]


def test_a_failed_start_leaves_no_folder_behind(tmp_path):
    out = tmp_path / "new" / "run"
    with pytest.raises(ValueError, match="no_such"):
        _run(out, settings={**TINY, "no_such": 1})
    assert not (tmp_path / "new").exists()


def test_an_unwritable_out_is_refused_before_any_work(tmp_path):
    """Write access is checked before the data loads: cifar10 from a missing root would fail there first. Root
    runs the command without the capability that lets it write anywhere (setpriv)."""
    out = tmp_path / "run"
    out.mkdir()
    out.chmod(0o555)
    as_owner = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"] if os.geteuid() == 0 else []
    try:
        done = subprocess.run([*as_owner, sys.executable, "-m", "ddfast", "distill", "--dataset", "cifar10",
                               "--data-root", str(tmp_path / "no-data"), "--out", str(out), *TINY_CLI],
                              capture_output=True, text=True, timeout=120)
    finally:
        out.chmod(0o755)
    assert done.returncode != 0
    assert done.stderr.startswith("ddfast distill: error: --out") and "Traceback" not in done.stderr \
        and "not a folder this process can write to" in done.stderr, \
        done.stderr[-2000:]
    assert list(out.iterdir()) == []


def test_the_next_run_removes_orphan_temporary_files(tmp_path):
    orphan = tmp_path / ".checkpoint.pt.3f9a0c1e.tmp"
    orphan.write_bytes(b"partial")
    kept = tmp_path / ".notes.tmp"
    kept.write_text("not ddfast's")
    with _io.run_folder(tmp_path):
        pass
    assert not orphan.exists() and kept.exists()


# ------------------------------------------------------------------------------------------------------ resume

def test_resume_with_fewer_iterations_than_the_checkpoint_ran_is_refused(tmp_path, digits8):
    config = make_config("dm", "digits", ipc=1, iterations=3, **TINY)
    METHODS["dm"].distill(digits8, config, checkpoint=common.Checkpointing(tmp_path / "ck.pt", every=1),
                          progress=False)
    fewer = make_config("dm", "digits", ipc=1, iterations=2, **TINY)
    with pytest.raises(ValueError, match="has run 3 iterations, more than the 2 asked for"):
        METHODS["dm"].distill(digits8, fewer, checkpoint=common.Checkpointing(tmp_path / "ck.pt", resume=True),
                              progress=False)


@pytest.mark.parametrize("change, differs", [
    ({"backend": "reference"}, "run.backend: checkpoint 'auto', this run 'reference'"),
    ({"autocast": "bf16"}, "run.autocast"),
    ({"data": "digits at 8x8"}, "run.data.im_size"),
    ({"settings": {**TINY, "lr_img": 5.0}}, "config.lr_img"),
])
def test_resume_refuses_a_checkpoint_of_another_run_naming_what_differs(tmp_path, digits8, change, differs):
    _run(tmp_path / "run", iterations=1)
    change = {k: digits8 if v == "digits at 8x8" else v for k, v in change.items()}
    with pytest.raises(ValueError, match="cannot be resumed by this run") as info:
        _run(tmp_path / "run", resume=True, **change)
    assert differs in str(info.value)


def test_resume_records_the_ddfast_version_of_the_checkpoint(tmp_path):
    out = tmp_path / "run"
    _run(out, iterations=1)
    saved = _io.load_checked(out / "checkpoint.pt", "a checkpoint")
    _io.save_checked({**saved, "provenance": {**saved["provenance"], "version": "0.0.1", "commit": "abc"}},
                     out / "checkpoint.pt")
    results = _run(out, resume=True)
    assert results["iterations"] == 2
    assert results["resumed_from"] == {"iteration": 1, "version": "0.0.1", "commit": "abc", "world_size": 1}
    assert results["ddfast"]["version"] == __import__("ddfast").__version__


def test_a_resumed_run_keeps_the_accuracy_curve_measured_before_it_stopped(tmp_path):
    out = tmp_path / "run"
    first = _run(out, iterations=2, eval_every=1)
    assert [p["iteration"] for p in first["curve"]] == [1, 2]
    assert json.loads((out / "curve.json").read_text()) == first["curve"]
    resumed = _run(out, iterations=4, eval_every=1, resume=True)
    assert [p["iteration"] for p in resumed["curve"]] == [1, 2, 3, 4]
    assert resumed["curve"][:2] == first["curve"]
    # points measured after the checkpoint a run resumes from are measured again, not kept twice
    (out / "curve.json").write_text(json.dumps(resumed["curve"] + [{"iteration": 5, "accuracy": 0.0}]))
    again = _run(out, iterations=5, eval_every=1, resume=True)
    assert [p["iteration"] for p in again["curve"]] == [1, 2, 3, 4, 5] and again["curve"][-1]["accuracy"] > 0
    fresh = _run(tmp_path / "fresh", iterations=1, eval_every=1)
    assert [p["iteration"] for p in fresh["curve"]] == [1]


def test_a_paper_preset_run_evaluates_by_the_methods_reference_protocol(tmp_path):
    results = _run(tmp_path / "run", iterations=1, eval_preset="paper", eval_runs=2)
    assert results["distilled"]["preset"] == "paper" and results["distilled"]["runs"] == 2
    assert results["distilled"]["epochs"] == 2 and results["random_real"]["runs"] == 2  # the overrides hold


def _distill_cli(out, *extra, env=None):
    return subprocess.run([sys.executable, "-m", "ddfast", "distill", "--out", str(out), *TINY_CLI, *extra],
                          capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1",
                                                                            **(env or {})})


def test_a_run_killed_before_a_checkpoint_rename_resumes_bit_identically(tmp_path):
    whole = _distill_cli(tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr
    killed = _distill_cli(tmp_path / "run", env={_io.KILL_ENV: "checkpoint.pt:2"})
    assert killed.returncode == -9, killed.stderr  # SIGKILL after iteration 2's temporary checkpoint was written
    left = sorted(p.name for p in (tmp_path / "run").iterdir())
    assert _io.LOCK_NAME in left and "checkpoint.pt" in left and "set.pt" not in left, left
    assert any(name.startswith(".checkpoint.pt.") and name.endswith(".tmp") for name in left), left
    resumed = _distill_cli(tmp_path / "run", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == sorted(p.name for p in (tmp_path /
                                                                                           "whole").iterdir())
    assert torch.equal(SyntheticSet.load(tmp_path / "run" / "set.pt").images,
                       SyntheticSet.load(tmp_path / "whole" / "set.pt").images)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["resumed_from"]["iteration"] == 1
