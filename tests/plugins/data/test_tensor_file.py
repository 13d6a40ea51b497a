"""tensor_file: .npz/.npy/.pt files of uint8 images in both layouts, written here, locally and in memory://."""

from __future__ import annotations

import io
import uuid

import fsspec
import numpy as np
import pytest
import torch

from genframe import GenframeError
from genframe_plugins.data.tensor_file import TensorFile

RNG = np.random.default_rng(0)
NCHW = RNG.integers(0, 256, (6, 3, 5, 5), dtype=np.uint8)
LABELS = np.array([0, 2, 1, 2, 0, 1], dtype=np.int32)


def sample_output(path, images: np.ndarray) -> None:
    """What `genframe sample` writes: key 'images' (N, C, H, W) and the spec's name."""
    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images, spec=np.array("quickstart"))
    path.write_bytes(buffer.getvalue())


def test_npz_as_genframe_sample_writes_it(tmp_path):
    sample_output(tmp_path / "samples.npz", NCHW)
    images, labels = TensorFile(path=str(tmp_path / "samples.npz")).load()
    assert labels is None and images.dtype == torch.uint8 and np.array_equal(images.numpy(), NCHW)


def test_npz_channels_last_with_labels_and_custom_keys(tmp_path):
    np.savez(tmp_path / "d.npz", x=NCHW.transpose(0, 2, 3, 1), y=LABELS)
    images, labels = TensorFile(path=str(tmp_path / "d.npz"), key="x", labels_key="y").load()
    assert np.array_equal(images.numpy(), NCHW) and images.is_contiguous()
    assert labels.dtype == torch.int64 and labels.tolist() == LABELS.tolist()
    np.savez(tmp_path / "e.npz", images=NCHW, labels=LABELS)  # 'labels' is taken when present
    assert TensorFile(path=str(tmp_path / "e.npz")).load()[1].tolist() == LABELS.tolist()


def test_npy_greyscale_without_channel_axis(tmp_path):
    grey = NCHW[:, 0]
    np.save(tmp_path / "g.npy", grey)
    images, labels = TensorFile(path=str(tmp_path / "g.npy")).load()
    assert images.shape == (6, 1, 5, 5) and np.array_equal(images[:, 0].numpy(), grey) and labels is None


def test_pt_tensor_and_dictionary_from_memory():
    fs = fsspec.filesystem("memory")
    root = f"/genframe-tensors-{uuid.uuid4().hex}"
    try:
        with fs.open(f"{root}/t.pt", "wb") as f:
            torch.save(torch.from_numpy(NCHW).permute(0, 2, 3, 1), f)  # channels last
        with fs.open(f"{root}/d.pt", "wb") as f:
            torch.save({"images": torch.from_numpy(NCHW), "labels": torch.from_numpy(LABELS)}, f)
        plain, no_labels = TensorFile(path=f"memory://{root}/t.pt").load()
        images, labels = TensorFile(path=f"memory://{root}/d.pt").load()
    finally:
        fs.rm(root, recursive=True)
    assert no_labels is None and np.array_equal(plain.numpy(), NCHW)
    assert np.array_equal(images.numpy(), NCHW) and labels.tolist() == LABELS.tolist()


def test_explicit_layout_subset_and_resize(tmp_path):
    ambiguous = RNG.integers(0, 256, (4, 3, 3, 3), dtype=np.uint8)  # 3x3 RGB or 3x3 with 3 channels?
    np.save(tmp_path / "a.npy", ambiguous)
    assert np.array_equal(TensorFile(path=str(tmp_path / "a.npy"), layout="nhwc").load()[0].numpy(),
                          ambiguous.transpose(0, 3, 1, 2))
    assert np.array_equal(TensorFile(path=str(tmp_path / "a.npy"), layout="nchw").load()[0].numpy(), ambiguous)

    np.savez(tmp_path / "d.npz", images=NCHW, labels=LABELS)
    images, labels = TensorFile(path=str(tmp_path / "d.npz"), limit=3, subset_seed=1, image_size=10).load()
    keep = torch.randperm(6, generator=torch.Generator().manual_seed(1))[:3].sort().values
    assert images.shape == (3, 3, 10, 10) and labels.tolist() == LABELS[keep.numpy()].tolist()


def test_errors(tmp_path):
    path = str(tmp_path / "d.npz")
    with pytest.raises(GenframeError, match=f"^tensor_file: path: no file at '{path}'$"):
        TensorFile(path=path).load()
    with pytest.raises(GenframeError, match=r"^tensor_file: path: 'x.h5' is not one of .npz, .npy, .pt, .pth$"):
        TensorFile(path="x.h5").load()

    np.savez(path, pixels=NCHW, spec=np.array("x"))
    with pytest.raises(GenframeError, match=f"^tensor_file: key: '{path}' has no 'images'; it holds pixels, spec$"):
        TensorFile(path=path).load()
    with pytest.raises(GenframeError, match=rf"^tensor_file: '{path}' holds \(\) <U1; expected uint8 images "):
        TensorFile(path=path, key="spec").load()
    with pytest.raises(GenframeError, match=f"^tensor_file: labels_key: '{path}' has no 'y' "):
        TensorFile(path=path, key="pixels", labels_key="y").load()

    np.savez(path, images=NCHW.astype(np.float32) / 255)
    with pytest.raises(GenframeError, match=r"holds \(6, 3, 5, 5\) float32; expected uint8 images \(N, C, H, W\), "
                                            r"\(N, H, W, C\) or \(N, H, W\)$"):
        TensorFile(path=path).load()
    np.savez(path, images=RNG.integers(0, 256, (2, 3, 3, 3), dtype=np.uint8))
    with pytest.raises(GenframeError, match=r"^tensor_file: layout: cannot tell the channel axis of shape "
                                            r"\(2, 3, 3, 3\) in .*; set layout: nchw or nhwc$"):
        TensorFile(path=path).load()
    np.savez(path, images=NCHW, labels=LABELS[:5])
    with pytest.raises(GenframeError, match=f"^tensor_file: labels_key: 'labels' in '{path}' must hold 6 "
                                            "non-negative integers$"):
        TensorFile(path=path).load()
    np.savez(path, images=NCHW, labels=LABELS.astype(np.float64))
    with pytest.raises(GenframeError, match="must hold 6 non-negative integers"):
        TensorFile(path=path).load()


class Arbitrary:
    """Unpickling an instance imports this module: exactly what a safe loader must not do."""


def test_files_that_would_run_code_are_refused(tmp_path):
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(GenframeError, match=r"^tensor_file: cannot load '.*o.npy' safely: ValueError: "):
        TensorFile(path=str(tmp_path / "o.npy")).load()
    torch.save({"images": torch.from_numpy(NCHW), "extra": Arbitrary()}, tmp_path / "o.pt")
    with pytest.raises(GenframeError, match=r"^tensor_file: cannot load '.*o.pt' safely: UnpicklingError: "):
        TensorFile(path=str(tmp_path / "o.pt")).load()
