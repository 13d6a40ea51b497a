"""Data sets: IDX parsing against files written here, the real MNIST test split, and scikit-learn's digits."""

from __future__ import annotations

import gzip
import os
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch

from genframe import GenframeError
from genframe.registry import create_registry
from genframe_plugins.data import IMAGES_MAGIC, LABELS_MAGIC, MNIST, Digits, parse_idx, take_subset

REPO_ROOT = Path(__file__).resolve().parents[2]


def shared_mnist() -> Path | None:
    """The real MNIST files: under $GENFRAME_DATA/mnist, else ../shared/datasets/mnist beside the repo."""
    base = os.environ.get("GENFRAME_DATA")
    folder = Path(base) / "mnist" if base else REPO_ROOT.parent / "shared" / "datasets" / "mnist"
    return folder if (folder / "t10k-images-idx3-ubyte.gz").exists() else None


def idx_bytes(array: np.ndarray, magic: int) -> bytes:
    header = magic.to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return header + array.astype(np.uint8).tobytes()


def fake_split(n: int, seed: int, rows: int = 28) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, rows, rows), dtype=np.uint8), rng.integers(0, 10, n, dtype=np.uint8)


def write_split(fs, folder: str, split: str, images: np.ndarray, labels: np.ndarray, gz: bool) -> None:
    stems = {"train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
             "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")}[split]
    fs.makedirs(folder, exist_ok=True)
    for stem, data in zip(stems, (idx_bytes(images, IMAGES_MAGIC), idx_bytes(labels, LABELS_MAGIC))):
        with fs.open(f"{folder}/{stem}{'.gz' if gz else ''}", "wb") as f:
            f.write(gzip.compress(data) if gz else data)


@pytest.fixture
def local_fs():
    return fsspec.filesystem("file")


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_mnist_reads_idx_files_in_both_layouts_and_compressions(tmp_path, local_fs, gz, layout):
    images, labels = fake_split(5, seed=1)
    folder = tmp_path / "MNIST" / "raw" if layout == "torchvision" else tmp_path
    write_split(local_fs, str(folder), "test", images, labels, gz)

    x, y = MNIST(root=str(tmp_path)).load()

    assert x.dtype == torch.uint8 and x.shape == (5, 1, 28, 28)
    assert np.array_equal(x[:, 0].numpy(), images)
    assert y.dtype == torch.int64 and y.tolist() == labels.tolist()


def test_mnist_reads_from_memory_filesystem():
    fs = fsspec.filesystem("memory")
    root = f"/genframe-test-{uuid.uuid4().hex}"
    images, labels = fake_split(4, seed=2)
    write_split(fs, root, "test", images, labels, gz=True)
    try:
        x, y = MNIST(root=f"memory://{root}").load()
    finally:
        fs.rm(root, recursive=True)
    assert np.array_equal(x[:, 0].numpy(), images)
    assert y.tolist() == labels.tolist()


def test_auto_split_prefers_train_and_explicit_split_is_honoured(tmp_path, local_fs):
    train, test = fake_split(6, seed=3), fake_split(3, seed=4)
    write_split(local_fs, str(tmp_path), "train", *train, gz=False)
    write_split(local_fs, str(tmp_path), "test", *test, gz=True)

    assert np.array_equal(MNIST(root=str(tmp_path)).load()[0][:, 0].numpy(), train[0])
    assert np.array_equal(MNIST(root=str(tmp_path), split="test").load()[0][:, 0].numpy(), test[0])


def test_resize_pad_centres_and_bilinear_scales(tmp_path, local_fs):
    images, labels = fake_split(3, seed=5)
    write_split(local_fs, str(tmp_path), "test", images, labels, gz=False)

    padded, _ = MNIST(root=str(tmp_path), image_size=32, resize="pad").load()
    assert padded.shape == (3, 1, 32, 32)
    assert np.array_equal(padded[:, 0, 2:30, 2:30].numpy(), images)
    assert int(padded.sum()) == int(images.astype(np.int64).sum())  # the 2-pixel border is all zero

    scaled, _ = MNIST(root=str(tmp_path), image_size=14).load()
    assert scaled.shape == (3, 1, 14, 14) and scaled.dtype == torch.uint8
    # Antialiased 2x shrinking averages 2x2 blocks (up to the filter's overlap): the mean is kept.
    assert abs(scaled.float().mean().item() - images.mean()) < 1.0

    with pytest.raises(GenframeError, match="resize: pad needs image_size >= 28, got 16"):
        MNIST(root=str(tmp_path), image_size=16, resize="pad").load()


def test_limit_takes_a_seeded_subset_in_file_order(tmp_path, local_fs):
    images, labels = fake_split(50, seed=6, rows=4)
    write_split(local_fs, str(tmp_path), "test", images, labels, gz=False)

    x, y = MNIST(root=str(tmp_path), image_size=4, limit=10, subset_seed=7).load()
    keep = torch.randperm(50, generator=torch.Generator().manual_seed(7))[:10].sort().values.numpy()
    assert np.array_equal(x[:, 0].numpy(), images[keep])
    assert y.tolist() == labels[keep].tolist()
    again, _ = MNIST(root=str(tmp_path), image_size=4, limit=10, subset_seed=7).load()
    other, _ = MNIST(root=str(tmp_path), image_size=4, limit=10, subset_seed=8).load()
    assert torch.equal(x, again) and not torch.equal(x, other)
    assert MNIST(root=str(tmp_path), image_size=4, limit=500).load()[0].shape[0] == 50


def test_take_subset_without_labels():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1)
    subset, labels = take_subset(images, None, 3, seed=0)
    assert labels is None and subset.flatten().tolist() == sorted(subset.flatten().tolist())
    assert subset.shape[0] == 3


def test_missing_files_name_root_files_and_download(tmp_path):
    with pytest.raises(GenframeError) as info:
        MNIST(root=str(tmp_path)).load()
    message = str(info.value)
    assert "\n" not in message and str(tmp_path) in message
    for stem in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                 "t10k-labels-idx1-ubyte"):
        assert stem in message
    assert "MNIST/raw" in message and "download: true" in message

    with pytest.raises(GenframeError, match="no train files .*download: true"):
        MNIST(root=str(tmp_path), split="train").load()


def test_only_labels_present_counts_as_missing(tmp_path):
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8), LABELS_MAGIC))
    with pytest.raises(GenframeError, match="no train or test files"):
        MNIST(root=str(tmp_path)).load()


def test_download_refuses_non_local_roots():
    with pytest.raises(GenframeError, match="download: only a local root"):
        MNIST(root=f"memory://genframe-empty-{uuid.uuid4().hex}", download=True).load()


def test_unknown_protocol_is_a_user_error():
    with pytest.raises(GenframeError, match="root: cannot open 'nosuchprotocol://x'"):
        MNIST(root="nosuchprotocol://x").load()


def test_parse_idx_checks_magic_and_size():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = idx_bytes(images, IMAGES_MAGIC)
    assert np.array_equal(parse_idx(raw, IMAGES_MAGIC, "x"), images)
    assert np.array_equal(parse_idx(gzip.compress(raw), IMAGES_MAGIC, "x"), images)
    with pytest.raises(GenframeError, match="f.idx: not an IDX file .*magic number 2051, expected 2049"):
        parse_idx(raw, LABELS_MAGIC, "f.idx")
    with pytest.raises(GenframeError, match=r"shape \(2, 3, 4\) \(40 bytes\) but the file holds 39 bytes"):
        parse_idx(raw[:-1], IMAGES_MAGIC, "f.idx")
    with pytest.raises(GenframeError, match="magic number None"):
        parse_idx(b"\x00", IMAGES_MAGIC, "f.idx")


def test_image_and_label_counts_must_agree(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((3, 2, 2), np.uint8), IMAGES_MAGIC))
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(2, np.uint8), LABELS_MAGIC))
    with pytest.raises(GenframeError, match="holds 3 images but .* holds 2 labels"):
        MNIST(root=str(tmp_path), image_size=2).load()


@pytest.mark.skipif(shared_mnist() is None, reason="MNIST files not found (set GENFRAME_DATA)")
def test_real_mnist_test_split():
    x, y = MNIST(root=str(shared_mnist())).load()  # only the test split is present: auto picks it
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (10000,) and y[0].item() == 7 and y[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(y).tolist()[:2] == [980, 1135]
    assert x.min().item() == 0 and x.max().item() == 255
    assert x[:, :, 0, :].max().item() == 0  # MNIST digits are centred: the top row is blank


@pytest.mark.skipif(shared_mnist() is None, reason="MNIST files not found (set GENFRAME_DATA)")
def test_real_mnist_padded_subset():
    full, labels = MNIST(root=str(shared_mnist())).load()
    x, y = MNIST(root=str(shared_mnist()), image_size=32, resize="pad", limit=100).load()
    keep = torch.randperm(10000, generator=torch.Generator().manual_seed(0))[:100].sort().values
    assert x.shape == (100, 1, 32, 32)
    assert torch.equal(x[:, :, 2:30, 2:30], full[keep]) and torch.equal(y, labels[keep])


def test_digits_values_match_sklearn():
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = Digits(image_size=8).load()
    assert x.shape == (1797, 1, 8, 8) and x.dtype == torch.uint8
    expected = np.rint(bunch.images * 255.0 / 16.0).astype(np.uint8)
    assert np.array_equal(x[:, 0].numpy(), expected)
    assert x.max().item() == 255 and y.tolist() == bunch.target.tolist()


def test_digits_resized_and_limited():
    x, y = Digits(limit=100, subset_seed=1).load()
    assert x.shape == (100, 1, 16, 16) and y.shape == (100,)
    full, labels = Digits(image_size=8).load()
    keep = torch.randperm(1797, generator=torch.Generator().manual_seed(1))[:100].sort().values
    assert torch.equal(y, labels[keep])
    # Bilinear upsampling interpolates: means agree within a grey level.
    assert abs(x.float().mean().item() - full[keep].float().mean().item()) < 1.0


def test_registry_lists_datasets():
    registry = create_registry()
    assert registry.get("dataset", "mnist") is MNIST
    assert registry.get("dataset", "digits") is Digits
    assert {"mnist", "digits"} <= set(registry.names("dataset"))
