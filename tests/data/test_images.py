"""Image loaders on tiny files written in exactly the real formats: IDX, CIFAR pickles, SVHN .mat."""

from __future__ import annotations

import gzip
import os
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.io
import torch

from gni_engine.data import build_dataset, input_output_dims
from gni_engine.data.formats import load_restricted_pickle
from gni_engine.errors import DataError
from gni_engine.spec import RunSpec

RNG = np.random.default_rng(0)


def image_spec(name: str, **data: Any) -> RunSpec:
    model = {"kind": "mlp"} if data.get("flatten", True) else {"kind": "convnet"}
    return RunSpec.model_validate({"task": "classification", "data": {"name": name, **data}, "model": model})


# --------------------------------------------------------------------------------------- MNIST
def idx_bytes(array: np.ndarray) -> bytes:
    """IDX: 0x0000, type code 0x08 (ubyte), rank, big-endian uint32 sizes, values."""
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def write_mnist(folder: Path, gz: bool, n_train: int = 3, n_test: int = 2) -> dict[str, np.ndarray]:
    folder.mkdir(parents=True, exist_ok=True)
    arrays = {
        "train-images-idx3-ubyte": RNG.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": RNG.integers(0, 10, n_train, dtype=np.uint8),
        "t10k-images-idx3-ubyte": RNG.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": RNG.integers(0, 10, n_test, dtype=np.uint8),
    }
    for name, array in arrays.items():
        if gz:
            (folder / f"{name}.gz").write_bytes(gzip.compress(idx_bytes(array)))
        else:
            (folder / name).write_bytes(idx_bytes(array))
    return arrays


@pytest.mark.parametrize(("folder", "gz"), [("mnist", False), ("mnist", True), ("MNIST/raw", True)])
def test_mnist_pixels_are_divided_by_255(tmp_path: Path, folder: str, gz: bool) -> None:
    arrays = write_mnist(tmp_path / folder, gz)
    data = build_dataset(image_spec("mnist"), data_dir=tmp_path)
    expected = torch.from_numpy(arrays["train-images-idx3-ubyte"].reshape(3, 784)).float() / 255
    assert torch.equal(data.x_train, expected)
    assert data.y_train.tolist() == arrays["train-labels-idx1-ubyte"].tolist()
    assert data.y_test.tolist() == arrays["t10k-labels-idx1-ubyte"].tolist()
    assert data.y_train.dtype == torch.int64
    assert data.meta["dequantised"] is False and len(data.meta["files"]) == 4


def test_fashion_mnist_unflattened_keeps_channel_height_width(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path / "fashion_mnist", gz=False)
    spec = image_spec("fashion_mnist", flatten=False)
    data = build_dataset(spec, data_dir=tmp_path, dtype=torch.float64)
    assert (data.input_shape, data.n_outputs) == input_output_dims(spec) == ((1, 28, 28), 10)
    np.testing.assert_array_equal(data.x_test[:, 0].numpy() * 255, arrays["t10k-images-idx3-ubyte"])


def test_missing_mnist_file_names_the_path_and_layout(tmp_path: Path) -> None:
    with pytest.raises(DataError) as error:
        build_dataset(image_spec("mnist"), data_dir=tmp_path)
    message = error.value.message
    assert str(tmp_path / "mnist" / "train-images-idx3-ubyte") + "[.gz]" in message
    assert "IDX format" in message and "GNI_DATA_DIR" in message
    write_mnist(tmp_path / "mnist", gz=False)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte"):
        build_dataset(image_spec("mnist"), data_dir=tmp_path)


def test_corrupt_idx_files_are_refused(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path / "mnist", gz=False)
    images = tmp_path / "mnist" / "train-images-idx3-ubyte"
    images.write_bytes(idx_bytes(arrays["train-images-idx3-ubyte"])[:-5])  # truncated data
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: IDX header declares shape \(3, 28, 28\)"):
        build_dataset(image_spec("mnist"), data_dir=tmp_path)
    images.write_bytes(b"\x01\x02" + idx_bytes(arrays["train-images-idx3-ubyte"])[2:])  # bad magic
    with pytest.raises(DataError, match="not an IDX file"):
        build_dataset(image_spec("mnist"), data_dir=tmp_path)
    images.unlink()
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b not really gzip")
    with pytest.raises(DataError, match="not a valid gzip file"):
        build_dataset(image_spec("mnist"), data_dir=tmp_path)
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").unlink()
    images.write_bytes(idx_bytes(RNG.integers(0, 256, (3, 32, 32), dtype=np.uint8)))
    with pytest.raises(DataError, match=r"shape \(N, 28, 28\)"):
        build_dataset(image_spec("mnist"), data_dir=tmp_path)
    # A header whose sizes multiply past 2⁶⁴ (wrapping to 0 in int64) is not an empty file.
    images.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 2**31, 2**31, 4))
    with pytest.raises(DataError, match=r"IDX header declares shape \(2147483648, 2147483648, 4\)"):
        build_dataset(image_spec("mnist"), data_dir=tmp_path)


def test_a_split_without_images_is_refused_naming_its_files(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist", gz=False, n_test=0)
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte.*: no images"):
        build_dataset(image_spec("mnist"), data_dir=tmp_path)


def test_image_subsets_are_seeded(tmp_path: Path) -> None:
    arrays = write_mnist(tmp_path / "mnist", gz=False, n_train=20, n_test=10)
    spec = image_spec("mnist", subset=5, test_subset=4)
    data = build_dataset(spec, data_dir=tmp_path)
    assert len(data.x_train) == 5 and len(data.x_test) == 4
    assert torch.equal(data.x_train, build_dataset(spec, data_dir=tmp_path).x_train)
    rows = {tuple(r) for r in arrays["train-images-idx3-ubyte"].reshape(20, 784).tolist()}
    kept = (data.x_train * 255).round().to(torch.uint8).tolist()
    assert all(tuple(r) in rows for r in kept)
    other = build_dataset(spec.model_copy(update={"seed": 1}), data_dir=tmp_path)
    assert not torch.equal(other.x_train, data.x_train)


# ------------------------------------------------------------------------------------ CIFAR-10
def cifar_batch(n: int) -> dict[bytes, Any]:
    return {
        b"batch_label": b"a batch",
        b"labels": [int(v) for v in RNG.integers(0, 10, n)],
        b"data": RNG.integers(0, 256, (n, 3072), dtype=np.uint8),
        b"filenames": [f"img_{i}.png".encode() for i in range(n)],
    }


def write_cifar(root: Path) -> dict[str, dict[bytes, Any]]:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": cifar_batch(2) for i in range(1, 6)} | {"test_batch": cifar_batch(3)}
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return batches


def test_cifar10_is_dequantised_and_channel_major(tmp_path: Path) -> None:
    batches = write_cifar(tmp_path)
    spec = image_spec("cifar10", flatten=False)
    data = build_dataset(spec, data_dir=tmp_path, dtype=torch.float64)
    pixels = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    assert data.x_train.shape == (10, 3, 32, 32) == (10, *input_output_dims(spec)[0])
    # x = (pixel + u) / 256 with u in [0, 1): the pixel is floor(256 x), channel c at row h, column w
    np.testing.assert_array_equal(np.floor(data.x_train.numpy() * 256).reshape(10, 3072), pixels)
    u = data.x_train.numpy() * 256 - pixels.reshape(10, 3, 32, 32)
    assert 0.0 <= u.min() and u.max() < 1.0 and abs(u.mean() - 0.5) < 0.01
    labels = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert data.y_train.tolist() == labels and data.y_test.tolist() == batches["test_batch"][b"labels"]
    again = build_dataset(spec, data_dir=tmp_path, dtype=torch.float64)
    assert torch.equal(again.x_train, data.x_train)
    assert not torch.equal(
        build_dataset(spec.model_copy(update={"seed": 3}), data_dir=tmp_path).x_train, data.x_train
    )
    plain = build_dataset(image_spec("cifar10", dequantise=False), data_dir=tmp_path)
    assert torch.equal(plain.x_test, torch.from_numpy(batches["test_batch"][b"data"]).float() / 255)


def short_string(value: bytes) -> bytes:
    return b"U" + bytes([len(value)]) + value


def python2_cifar_pickle(pixels: np.ndarray, labels: list[int]) -> bytes:
    """A batch as Python 2's cPickle wrote CIFAR-10: byte strings and ``numpy.core.multiarray`` names."""
    n = pixels.shape[0]
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + short_string(b"b") + b"\x87R"
    )
    dtype = b"cnumpy\ndtype\n" + short_string(b"u1") + b"K\x00K\x01\x87R"
    dtype += b"(K\x03" + short_string(b"|") + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    state = b"(K\x01" + b"K" + bytes([n]) + b"M\x00\x0c\x86" + dtype + b"\x89"
    state += b"T" + struct.pack("<i", pixels.size) + pixels.tobytes() + b"tb"
    label_list = b"](" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return (
        b"\x80\x02}(" + short_string(b"data") + array + state + short_string(b"labels") + label_list + b"u."
    )


def test_python2_cifar_batches_load(tmp_path: Path) -> None:
    pixels = RNG.integers(0, 256, (2, 3072), dtype=np.uint8)
    path = tmp_path / "data_batch_1"
    path.write_bytes(python2_cifar_pickle(pixels, [3, 9]))
    batch = load_restricted_pickle(path)
    np.testing.assert_array_equal(batch[b"data"], pixels)
    assert batch[b"labels"] == [3, 9]


class RunsAShellCommand:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return os.system, (f"touch {self.marker}",)


def test_malicious_pickles_are_refused(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    write_cifar(tmp_path)
    batch_path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    batch = cifar_batch(2) | {b"labels": RunsAShellCommand(marker)}
    batch_path.write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_3: refused to unpickle: global (posix|nt)\.system"):
        build_dataset(image_spec("cifar10"), data_dir=tmp_path)
    assert not marker.exists()
    batch_path.write_bytes(b"\x80\x02cbuiltins\neval\nX\x06\x00\x00\x001 + 1\x85R.")
    with pytest.raises(DataError, match=r"global builtins\.eval is not allowed"):
        load_restricted_pickle(batch_path)
    batch_path.write_bytes(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00xX\x04\x00\x00\x00zlib\x86R.")
    with pytest.raises(DataError, match="encoding 'zlib' is not allowed"):
        load_restricted_pickle(batch_path)


def test_corrupt_and_missing_cifar_batches(tmp_path: Path) -> None:
    batches = write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    (folder / "test_batch").write_bytes(pickle.dumps(batches["test_batch"], protocol=2)[:-30])
    with pytest.raises(DataError, match="test_batch: corrupt pickle"):
        build_dataset(image_spec("cifar10"), data_dir=tmp_path)
    (folder / "test_batch").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8)}, protocol=2))
    with pytest.raises(
        DataError, match=r"test_batch: expected b'data' as a uint8 array of shape \(N, 3072\)"
    ):
        build_dataset(image_spec("cifar10"), data_dir=tmp_path)
    (folder / "data_batch_5").unlink()
    with pytest.raises(DataError) as error:
        build_dataset(image_spec("cifar10"), data_dir=tmp_path)
    assert str(folder / "data_batch_5") in error.value.message


# ---------------------------------------------------------------------------------------- SVHN
def write_svhn(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, n in (("train", 3), ("test", 2)):
        x = RNG.integers(0, 256, (32, 32, 3, n), dtype=np.uint8)
        y = np.array([[10], [1], [7]][:n], dtype=np.uint8)
        scipy.io.savemat(folder / f"{split}_32x32.mat", {"X": x, "y": y})
        files[split] = (x, y)
    return files


def test_svhn_maps_label_10_to_0_and_transposes(tmp_path: Path) -> None:
    files = write_svhn(tmp_path / "svhn")
    spec = image_spec("svhn", flatten=False)
    data = build_dataset(spec, data_dir=tmp_path, dtype=torch.float64)
    assert data.y_train.tolist() == [0, 1, 7] and data.y_test.tolist() == [0, 1]
    x, _ = files["train"]
    for i in range(3):  # image i, channel c at (h, w) is X[h, w, c, i]
        np.testing.assert_array_equal(
            np.floor(data.x_train[i].numpy() * 256), x[:, :, :, i].transpose(2, 0, 1)
        )
    assert data.meta["dequantised"] is True
    assert (data.input_shape, data.n_outputs) == input_output_dims(spec) == ((3, 32, 32), 10)


def test_svhn_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(DataError) as missing:
        build_dataset(image_spec("svhn"), data_dir=tmp_path)
    assert str(tmp_path / "svhn" / "train_32x32.mat") in missing.value.message
    write_svhn(tmp_path)  # the data directory itself is accepted too (torchvision's layout)
    assert len(build_dataset(image_spec("svhn"), data_dir=tmp_path).x_train) == 3
    (tmp_path / "test_32x32.mat").write_bytes(b"this is not a MATLAB file at all" * 8)
    with pytest.raises(DataError, match=r"test_32x32\.mat: cannot read \.mat file"):
        build_dataset(image_spec("svhn"), data_dir=tmp_path)
    scipy.io.savemat(
        tmp_path / "test_32x32.mat", {"X": np.zeros((32, 32, 3, 2), np.uint8), "y": np.array([[0], [3]])}
    )
    with pytest.raises(DataError, match=r"labels outside 1\.\.10"):
        build_dataset(image_spec("svhn"), data_dir=tmp_path)


def test_cifar_batches_that_break_the_reader_are_data_errors(tmp_path: Path) -> None:
    batches = write_cifar(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    huge_label = {**batches["data_batch_1"], b"labels": [2**70, 1]}
    path.write_bytes(pickle.dumps(huge_label, protocol=2))
    with pytest.raises(DataError, match=r"data_batch_1: b'labels' holds a class id beyond 64 bits"):
        build_dataset(image_spec("cifar10"), data_dir=tmp_path)
    # builtins.bytes(2**62): an allowed call asking for more memory than any machine has
    path.write_bytes(b"\x80\x02cbuiltins\nbytes\n\x8a\x08" + (2**62).to_bytes(8, "little") + b"\x85R.")
    with pytest.raises(DataError, match=r"data_batch_1: the pickle asks for more memory than there is"):
        build_dataset(image_spec("cifar10"), data_dir=tmp_path)


def test_a_data_folder_that_cannot_be_entered_is_a_data_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_mnist(tmp_path / "mnist", gz=False)
    is_file = Path.is_file

    def locked(path: Path) -> bool:  # what Path.is_file does under a folder without the x bit
        if path.parent == tmp_path / "mnist":
            raise PermissionError(13, "Permission denied", str(path))
        return is_file(path)

    monkeypatch.setattr(Path, "is_file", locked)
    with pytest.raises(
        DataError, match=r"mnist: cannot look for .*mnist/train-images-idx3-ubyte: Permission denied"
    ):
        build_dataset(image_spec("mnist"), data_dir=tmp_path)


def test_a_corrupt_compressed_mat_file_is_a_data_error(tmp_path: Path) -> None:
    write_svhn(tmp_path)
    path = tmp_path / "test_32x32.mat"
    scipy.io.savemat(
        path,
        {"X": RNG.integers(0, 256, (32, 32, 3, 2), dtype=np.uint8), "y": np.array([[1], [2]], np.uint8)},
        do_compression=True,
    )
    corrupt = bytearray(path.read_bytes())
    for i in range(200, 260):
        corrupt[i] ^= 0xFF
    path.write_bytes(bytes(corrupt))
    with pytest.raises(DataError, match=r"test_32x32\.mat: cannot read \.mat file"):
        build_dataset(image_spec("svhn"), data_dir=tmp_path)


def test_images_and_labels_come_from_one_copy_of_the_data_set(tmp_path: Path) -> None:
    write_mnist(tmp_path / "mnist", gz=False, n_train=3)
    write_mnist(tmp_path / "MNIST" / "raw", gz=True, n_train=3)  # torchvision's copy, other images
    (tmp_path / "mnist" / "train-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError) as mixed:  # never mnist/'s images with MNIST/raw's labels
        build_dataset(image_spec("mnist"), data_dir=tmp_path)
    assert str(tmp_path / "mnist" / "train-labels-idx1-ubyte") in mixed.value.message
    batches = write_cifar(tmp_path)
    other = tmp_path / "cifar10" / "cifar-10-batches-py"
    other.mkdir(parents=True)
    for name, batch in batches.items():
        (other / name).write_bytes(pickle.dumps(batch, protocol=2))
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataError) as partial:
        build_dataset(image_spec("cifar10"), data_dir=tmp_path)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_4") in partial.value.message
