"""The failure model of files: checksums in ddfast's files, errors naming broken files, the umask."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
import torch

from ddfast import _io
from ddfast.data import load_dataset
from ddfast.experts import load_buffer, save_buffer
from ddfast.methods import make_config
from ddfast.methods import _common as common
from ddfast.methods.sre2l import TeacherRecipe, load_teacher, save_teacher
from ddfast.models import get_network
from ddfast.synthetic import FORMAT, SyntheticSet

@pytest.fixture(scope="module")
def digits8():
    return load_dataset("digits", im_size=8)


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
