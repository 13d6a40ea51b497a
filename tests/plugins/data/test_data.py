"""Array-format data sets: IDX (MNIST, Fashion-MNIST) and CIFAR-10 batches written here, the real MNIST
test split, and scikit-learn's digits."""

from __future__ import annotations

import gzip
import os
import pickle
import uuid

import fsspec
import numpy as np
import pytest
import torch

from genframe import GenframeError
from genframe.components.registry import create_registry
from genframe.spec.load import load_spec
from genframe_plugins.data.datasets import (CIFAR10, IMAGES_MAGIC, LABELS_MAGIC, MNIST, Digits, FashionMNIST,
                                   parse_cifar_batch, parse_idx, take_subset)

from ...conftest import SPECS


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


def test_real_mnist_test_split(mnist_root):
    x, y = MNIST(root=str(mnist_root)).load()  # only the test split is present: auto picks it
    assert x.shape == (10000, 1, 28, 28) and x.dtype == torch.uint8
    assert y.shape == (10000,) and y[0].item() == 7 and y[:5].tolist() == [7, 2, 1, 0, 4]
    assert torch.bincount(y).tolist()[:2] == [980, 1135]
    assert x.min().item() == 0 and x.max().item() == 255
    assert x[:, :, 0, :].max().item() == 0  # MNIST digits are centred: the top row is blank


def test_real_mnist_padded_subset(mnist_root):
    full, labels = MNIST(root=str(mnist_root)).load()
    x, y = MNIST(root=str(mnist_root), image_size=32, resize="pad", limit=100).load()
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


def test_fixed_data_sets_name_their_classes():
    assert MNIST().class_names() == [str(d) for d in range(10)]
    assert Digits().class_names() == [str(d) for d in range(10)]
    assert FashionMNIST().class_names()[:2] == ["T-shirt/top", "Trouser"] and len(FashionMNIST().class_names()) == 10
    assert CIFAR10().class_names()[3] == "cat" and len(CIFAR10().class_names()) == 10


def test_registry_lists_datasets():
    registry = create_registry()
    assert registry.get("dataset", "mnist") is MNIST
    assert registry.get("dataset", "fashion_mnist") is FashionMNIST
    assert registry.get("dataset", "cifar10") is CIFAR10
    assert registry.get("dataset", "digits") is Digits
    assert {"celeba", "image_folder", "tensor_file"} <= set(registry.names("dataset"))


def test_download_failure_is_one_line(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torchvision.datasets, "MNIST", offline)
    with pytest.raises(GenframeError, match=r"^mnist: download into '.*' failed: OSError: network is unreachable; "
                                            r"without internet, put the files there yourself \(no train or test "
                                            r"files under root .*: looked for train-images-idx3-ubyte\[.gz\]"):
        MNIST(root=str(tmp_path), download=True).load()


# --------------------------------------------------------------------------- Fashion-MNIST


@pytest.mark.parametrize("layout", ["flat", "torchvision"])
def test_fashion_mnist_shares_the_idx_reader_and_has_its_own_layout(tmp_path, local_fs, layout):
    images, labels = fake_split(4, seed=11)
    folder = tmp_path / "FashionMNIST" / "raw" if layout == "torchvision" else tmp_path
    write_split(local_fs, str(folder), "train", images, labels, gz=True)

    x, y = FashionMNIST(root=str(tmp_path), image_size=32, resize="pad").load()
    assert x.shape == (4, 1, 32, 32)
    assert np.array_equal(x[:, 0, 2:30, 2:30].numpy(), images) and y.tolist() == labels.tolist()


def test_fashion_mnist_does_not_take_mnist_files(tmp_path, local_fs):
    write_split(local_fs, str(tmp_path / "MNIST" / "raw"), "test", *fake_split(2, seed=12), gz=False)
    with pytest.raises(GenframeError) as info:
        FashionMNIST(root=str(tmp_path)).load()
    assert str(info.value).startswith(f"fashion_mnist: no train or test files under root '{tmp_path}'")
    assert "FashionMNIST/raw folder" in str(info.value)


def test_fashion_mnist_downloads_through_torchvision(tmp_path, monkeypatch, local_fs):
    import torchvision.datasets

    images, labels = fake_split(3, seed=13)
    calls = []

    class FakeTorchvision:  # stands in for the network: writes what torchvision would
        def __init__(self, root, train, download):
            calls.append((root, train, download))
            write_split(local_fs, f"{root}/FashionMNIST/raw", "train" if train else "test", images, labels, gz=False)

    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", FakeTorchvision)
    x, y = FashionMNIST(root=str(tmp_path), download=True).load()
    assert calls == [(str(tmp_path), True, True)]
    assert np.array_equal(x[:, 0].numpy(), images) and y.tolist() == labels.tolist()


# --------------------------------------------------------------------------- CIFAR-10


def cifar_batch(n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, 10, n).tolist()


def cifar_bytes(data: np.ndarray, labels: list[int], *, python2: bool = True) -> bytes:
    """A batch as the official files hold it: a protocol-2 pickle naming numpy.core (Python 2's numpy)."""
    if not python2:
        return pickle.dumps({b"batch_label": b"testing", b"labels": labels, b"data": data}, protocol=4)
    raw = pickle.dumps({"batch_label": "training batch", "labels": labels, "data": data,
                        "filenames": [f"img_{i}.png" for i in range(len(labels))]}, protocol=2)
    return raw.replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def write_cifar(folder, split: str, batches: list[tuple[np.ndarray, list[int]]]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    names = ["test_batch"] if split == "test" else [f"data_batch_{i}" for i in range(1, 6)]
    for name, (data, labels) in zip(names, batches):
        (folder / name).write_bytes(cifar_bytes(data, labels))


def fake_cifar(root, n_per_batch: int = 4) -> tuple[np.ndarray, np.ndarray]:
    batches = [cifar_batch(n_per_batch, seed=20 + i) for i in range(5)]
    write_cifar(root / "cifar-10-batches-py", "train", batches)
    return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])


def test_cifar_batches_read_planes_in_rgb_order(tmp_path):
    data, labels = fake_cifar(tmp_path)
    x, y = CIFAR10(root=str(tmp_path)).load()
    assert x.shape == (20, 3, 32, 32) and x.dtype == torch.uint8
    assert y.dtype == torch.int64 and y.tolist() == labels.tolist()
    # row layout: 1024 red values, 1024 green, 1024 blue, each plane row-major
    assert x[7, 1, 3, 5].item() == data[7, 1024 + 3 * 32 + 5]
    assert np.array_equal(x.reshape(20, -1).numpy(), data)


def test_cifar_flat_layout_test_split_and_auto(tmp_path):
    test = [cifar_batch(3, seed=30)]
    write_cifar(tmp_path, "test", test)
    x, y = CIFAR10(root=str(tmp_path)).load()  # auto: no training batches, so the test split
    assert np.array_equal(x.reshape(3, -1).numpy(), test[0][0]) and y.tolist() == test[0][1]
    fake_cifar(tmp_path)
    assert CIFAR10(root=str(tmp_path)).load()[0].shape[0] == 20
    assert CIFAR10(root=str(tmp_path), split="test").load()[0].shape[0] == 3


def test_cifar_reads_python3_pickles_with_bytes_keys_from_memory():
    fs = fsspec.filesystem("memory")
    root = f"/genframe-cifar-{uuid.uuid4().hex}"
    data, labels = cifar_batch(2, seed=31)
    fs.pipe(f"{root}/test_batch", cifar_bytes(data, labels, python2=False))
    try:
        x, y = CIFAR10(root=f"memory://{root}", split="test").load()
    finally:
        fs.rm(root, recursive=True)
    assert np.array_equal(x.reshape(2, -1).numpy(), data) and y.tolist() == labels


def test_cifar_subset_and_resize(tmp_path):
    fake_cifar(tmp_path, n_per_batch=10)
    full, labels = CIFAR10(root=str(tmp_path)).load()
    x, y = CIFAR10(root=str(tmp_path), limit=7, subset_seed=3, image_size=16).load()
    keep = torch.randperm(50, generator=torch.Generator().manual_seed(3))[:7].sort().values
    assert x.shape == (7, 3, 16, 16) and torch.equal(y, labels[keep])
    # antialiased 2x shrinking averages 2x2 blocks: each image's mean is kept within a grey level
    assert torch.allclose(x.float().mean((1, 2, 3)), full[keep].float().mean((1, 2, 3)), atol=1.0)


def test_cifar_refuses_pickles_that_would_run_code(tmp_path):
    marker = tmp_path / "still-here"
    marker.write_text("")

    class Payload:
        def __reduce__(self):
            return os.remove, (str(marker),)

    raw = pickle.dumps({"data": Payload(), "labels": []}, protocol=2)
    with pytest.raises(GenframeError, match=r"^batch: not a CIFAR-10 batch: it references (posix|nt|os)\.remove, "
                                            r"which is never unpickled$"):
        parse_cifar_batch(raw, "batch")
    assert marker.exists()


def test_cifar_content_errors():
    data, labels = cifar_batch(2, seed=32)
    with pytest.raises(GenframeError, match=r"^b: not a CIFAR-10 batch: expected a dict with 'data' "
                                            r"\(N x 3072 uint8\) and N 'labels'$"):
        parse_cifar_batch(cifar_bytes(data[:, :100], labels), "b")
    with pytest.raises(GenframeError, match="expected a dict"):
        parse_cifar_batch(cifar_bytes(data, labels[:1]), "b")
    with pytest.raises(GenframeError, match="labels must be integers 0..9"):
        parse_cifar_batch(cifar_bytes(data, [3, 10]), "b")
    with pytest.raises(GenframeError, match="^b: not a CIFAR-10 batch: "):
        parse_cifar_batch(b"not a pickle", "b")


def test_cifar_missing_and_incomplete_files(tmp_path):
    with pytest.raises(GenframeError) as info:
        CIFAR10(root=str(tmp_path)).load()
    assert str(info.value) == (f"cifar10: no train or test files under root '{tmp_path}': looked for "
                               "data_batch_1..5, test_batch in the root and in its cifar-10-batches-py folder; "
                               "set `download: true` to fetch them")
    write_cifar(tmp_path, "train", [cifar_batch(2, seed=i) for i in range(4)])  # data_batch_5 missing
    with pytest.raises(GenframeError, match="no train files under root .* looked for data_batch_1..5 in"):
        CIFAR10(root=str(tmp_path), split="train").load()


def test_cifar_download_uses_torchvision_archive_and_parses_safely(tmp_path, monkeypatch):
    import torchvision.datasets.utils

    calls = []

    def fake_download(url, root, filename, md5):  # what the archive extracts to
        calls.append((url, filename, md5))
        fake_cifar(tmp_path)

    monkeypatch.setattr(torchvision.datasets.utils, "download_and_extract_archive", fake_download)
    x, _ = CIFAR10(root=str(tmp_path), download=True).load()
    assert x.shape == (20, 3, 32, 32)
    assert calls == [("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "cifar-10-python.tar.gz",
                      "c58f30108f718f92721af3b95e74349a")]
    with pytest.raises(GenframeError, match="cifar10: download: only a local root can be downloaded to"):
        CIFAR10(root=f"memory://genframe-empty-{uuid.uuid4().hex}", download=True).load()


# --------------------------------------------------------------------------- every shipped spec, any benchmark


@pytest.mark.parametrize("spec", sorted(p.name for p in SPECS.glob("*.yaml")))
@pytest.mark.parametrize("data_type", ["mnist", "fashion_mnist", "cifar10", "celeba", "image_folder"])
def test_shipped_specs_take_any_data_set_in_one_override(spec, data_type):
    overrides = [f"data.type={data_type}"]
    if "root" not in load_spec(str(SPECS / spec))["data"]:  # digits has no root; every other data set reads one
        overrides.append("data.root=data/x")
    if data_type == "image_folder":  # your own images have nothing to download: one mapping replaces the benchmark
        overrides = ["data={type: image_folder, root: data/x}"]
    data = load_spec(str(SPECS / spec), overrides)
    assert data["data"]["type"] == data_type


def test_wgan_gp_spec_trains_on_cifar10(tmp_path):
    from genframe.api import sample, train

    fake_cifar(tmp_path / "cifar", n_per_batch=4)
    finished = train(str(SPECS / "wgan_gp.yaml"), out=str(tmp_path / "run"), device="cpu", overrides=[
        "data.type=cifar10", f"data.root={tmp_path / 'cifar'}", "data.image_size=32",
        "components.generator.width=8", "components.critic.width=8", "stages.0.trainer.steps=2",
        "stages.0.trainer.n_critic=1", "stages.0.trainer.batch_size=8", "evaluation.n_samples=4"])
    images, _ = sample(finished.url, 2, seed=0)
    assert images.shape == (2, 3, 32, 32)
