r"""MNIST, Fashion-MNIST, CIFAR-10 and SVHN from their standard files in a data directory.

Pixels are scaled to [0, 1]: by :math:`x / 255`, or dequantised as :math:`(x + u) / 256` with
:math:`u \sim U(0, 1)` per pixel drawn from the ``dequantise.train`` / ``dequantise.test`` streams
(default for CIFAR-10 and SVHN). ``subset`` / ``test_subset`` keep a seeded random subset (in file
order). Images are ``(N, C, H, W)``, or ``(N, C·H·W)`` with ``flatten``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from gni_engine.data.dataset import Dataset
from gni_engine.data.formats import load_mat, load_restricted_pickle, read_idx
from gni_engine.data.locations import find_file, resolve_data_dir
from gni_engine.data.splits import data_generator, subset_indices
from gni_engine.errors import DataError
from gni_engine.spec import ImageData

IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {
    "mnist": (1, 28, 28),
    "fashion_mnist": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "svhn": (3, 32, 32),
}
N_CLASSES = 10
MNIST_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_MNIST_DIRS = {"mnist": ("mnist", "MNIST/raw"), "fashion_mnist": ("fashion_mnist", "FashionMNIST/raw")}
CIFAR_BATCH_DIR = "cifar-10-batches-py"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
SVHN_FILES = ("train_32x32.mat", "test_32x32.mat")


@dataclass(frozen=True)
class _RawImages:
    """Images as read: uint8 ``(N, C, H, W)`` and int64 labels ``(N,)``."""

    x: npt.NDArray[np.uint8]
    y: npt.NDArray[np.int64]


def _layout(name: str, root: str) -> str:
    if name in _MNIST_DIRS:
        primary, torchvision = _MNIST_DIRS[name]
        files = ", ".join(MNIST_FILES)
        return (
            f"{root}/{primary}/ holding {files} (IDX format, optionally .gz), "
            f"or torchvision's {root}/{torchvision}/"
        )
    if name == "cifar10":
        batches = ", ".join((*CIFAR_TRAIN_BATCHES, "test_batch"))
        return f"{root}/{CIFAR_BATCH_DIR}/ holding {batches} (CIFAR-10 python version)"
    return f"{root}/svhn/ holding {' and '.join(SVHN_FILES)} (SVHN format 2)"


def _checked_labels(labels: npt.NDArray[Any], n: int, source: str) -> npt.NDArray[np.int64]:
    labels = np.asarray(labels).reshape(-1)
    if labels.shape[0] != n:
        raise DataError(f"{source}: {labels.shape[0]} labels for {n} images")
    if labels.size and (labels.min() < 0 or labels.max() >= N_CLASSES):
        raise DataError(f"{source}: labels outside 0..{N_CLASSES - 1} (found {labels.min()}..{labels.max()})")
    return labels.astype(np.int64)


# ------------------------------------------------------------------------------------- readers
def read_mnist(root: Path, name: str, split: str) -> tuple[_RawImages, list[Path]]:
    """One split (``"train"``/``"t10k"``) of MNIST or Fashion-MNIST from its two IDX files."""
    directories = [root / d for d in _MNIST_DIRS[name]]
    layout = _layout(name, str(root))
    image_path = find_file(
        directories, f"{split}-images-idx3-ubyte", name=name, layout=layout, gzipped_ok=True
    )
    label_path = find_file(  # beside the images: one copy of the data set, never two mixed
        [image_path.parent], f"{split}-labels-idx1-ubyte", name=name, layout=layout, gzipped_ok=True
    )
    images, labels = read_idx(image_path), read_idx(label_path)
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            f"{image_path}: expected uint8 images of shape (N, 28, 28), found {images.dtype} {images.shape}"
        )
    if labels.dtype != np.uint8 or labels.ndim != 1:
        raise DataError(
            f"{label_path}: expected a 1-D uint8 label vector, found {labels.dtype} {labels.shape}"
        )
    y = _checked_labels(labels, images.shape[0], str(label_path))
    return _RawImages(images[:, None], y), [image_path, label_path]  # (N, 1, 28, 28)


def _cifar_batch(path: Path) -> _RawImages:
    batch = load_restricted_pickle(path)
    if not isinstance(batch, dict):
        raise DataError(f"{path}: expected a dict with b'data' and b'labels', found {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        found = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataError(f"{path}: expected b'data' as a uint8 array of shape (N, 3072), found {found}")
    if not isinstance(labels, list | np.ndarray) or not all(isinstance(v, int | np.integer) for v in labels):
        raise DataError(f"{path}: expected b'labels' as a list of integer class ids")
    try:
        as_int64 = np.asarray(labels, dtype=np.int64)
    except OverflowError:
        raise DataError(f"{path}: b'labels' holds a class id beyond 64 bits (CIFAR-10's are 0–9)") from None
    y = _checked_labels(as_int64, data.shape[0], str(path))
    return _RawImages(data.reshape(-1, 3, 32, 32), y)  # rows are 1024 R, 1024 G, 1024 B, each row-major


def read_cifar10(root: Path, split: str) -> tuple[_RawImages, list[Path]]:
    """CIFAR-10's five training batches (``"train"``) or its test batch (``"test"``)."""
    directories = [root / CIFAR_BATCH_DIR, root / "cifar10" / CIFAR_BATCH_DIR]
    filenames = CIFAR_TRAIN_BATCHES if split == "train" else ("test_batch",)
    layout = _layout("cifar10", str(root))
    first = find_file(directories, filenames[0], name="cifar10", layout=layout)
    # The other batches from the same folder: one copy of the data set, never two mixed.
    paths = [first, *(find_file([first.parent], f, name="cifar10", layout=layout) for f in filenames[1:])]
    batches = [_cifar_batch(path) for path in paths]
    return _RawImages(np.concatenate([b.x for b in batches]), np.concatenate([b.y for b in batches])), paths


def read_svhn(root: Path, split: str) -> tuple[_RawImages, list[Path]]:
    """SVHN format 2: ``X`` uint8 (32, 32, 3, N), ``y`` (N, 1) with label 10 meaning the digit 0."""
    path = find_file(
        [root / "svhn", root], f"{split}_32x32.mat", name="svhn", layout=_layout("svhn", str(root))
    )
    content = load_mat(path)
    x, y = content.get("X"), content.get("y")
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.ndim != 4 or x.shape[:3] != (32, 32, 3):
        found = f"{x.dtype} {x.shape}" if isinstance(x, np.ndarray) else "no 'X'"
        raise DataError(f"{path}: expected 'X' as uint8 of shape (32, 32, 3, N), found {found}")
    if not isinstance(y, np.ndarray) or y.size != x.shape[3] or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: expected 'y' as {x.shape[3]} integer labels in 1..10")
    labels = y.reshape(-1).astype(np.int64)
    if labels.size and (labels.min() < 1 or labels.max() > 10):
        raise DataError(f"{path}: labels outside 1..10 (found {labels.min()}..{labels.max()})")
    images = np.ascontiguousarray(x.transpose(3, 2, 0, 1))  # (H, W, C, N) -> (N, C, H, W)
    return _RawImages(images, labels % 10), [path]


# --------------------------------------------------------------------------------------- build
def _read(name: str, root: Path, split: str) -> tuple[_RawImages, list[Path]]:
    if name in _MNIST_DIRS:
        return read_mnist(root, name, "train" if split == "train" else "t10k")
    if name == "cifar10":
        return read_cifar10(root, split)
    return read_svhn(root, split)


def dequantises(spec: ImageData) -> bool:
    """Whether pixels get U(0, 1) noise: ``spec.dequantise``, by default only for CIFAR-10 and SVHN."""
    return spec.dequantise if spec.dequantise is not None else spec.name in ("cifar10", "svhn")


def scale_pixels(
    pixels: torch.Tensor, dequantise: bool, generator: torch.Generator, dtype: torch.dtype
) -> torch.Tensor:
    r"""uint8 pixels to [0, 1]: :math:`(x + u)/256`, :math:`u \sim U(0,1)`, or :math:`x / 255`.

    ``u`` is drawn in float32 whatever ``dtype`` is, so every precision sees the same noise; the
    arithmetic runs in float64 for float64 and in float32 otherwise (bf16 would round 255 + u).
    """
    work = torch.float64 if dtype == torch.float64 else torch.float32
    x = pixels.to(work)
    if dequantise:
        u = torch.rand(pixels.shape, generator=generator, dtype=torch.float32)
        x = (x + u.to(work)) / 256
    else:
        x = x / 255
    return x.to(dtype)


def _finish(
    raw: _RawImages, keep: int | None, seed: int, split: str, spec: ImageData, dtype: torch.dtype
) -> tuple[torch.Tensor, torch.Tensor]:
    index = subset_indices(len(raw.y), keep, data_generator(seed, f"subset.{split}"))
    pixels = torch.from_numpy(raw.x)[index]  # (n, C, H, W) uint8
    x = scale_pixels(pixels, dequantises(spec), data_generator(seed, f"dequantise.{split}"), dtype)
    if spec.flatten:
        x = x.reshape(len(x), -1)  # (n, C·H·W)
    return x, torch.from_numpy(raw.y)[index]


def image_dataset(spec: ImageData, seed: int, dtype: torch.dtype, data_dir: str | Path | None) -> Dataset:
    """Read, subset and scale one of the image data sets (its official train/test split)."""
    root = resolve_data_dir(data_dir, spec.data_dir, name=spec.name, layout=_layout(spec.name, "<dir>"))
    train_raw, train_files = _read(spec.name, root, "train")
    test_raw, test_files = _read(spec.name, root, "test")
    for raw, files in ((train_raw, train_files), (test_raw, test_files)):
        if len(raw.y) == 0:
            raise DataError(f"{', '.join(map(str, files))}: no images")
    x_train, y_train = _finish(train_raw, spec.subset, seed, "train", spec, dtype)
    x_test, y_test = _finish(test_raw, spec.test_subset, seed, "test", spec, dtype)
    shape = IMAGE_SHAPES[spec.name]
    return Dataset(
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        input_shape=(int(np.prod(shape)),) if spec.flatten else shape,
        n_outputs=N_CLASSES,
        meta={
            "files": [str(p) for p in (*train_files, *test_files)],
            "dequantised": dequantises(spec),
            "n_train_available": len(train_raw.y),
            "n_test_available": len(test_raw.y),
            "image_shape": list(shape),
        },
    )
