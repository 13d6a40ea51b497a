"""Encoded-image data sets: folders and archives written here, read from the disk, memory:// and archives;
the decoding policies (fit, colour, transparency, 16 bit, EXIF), the decoded-image cache, CelebA."""

from __future__ import annotations

import io
import tarfile
import uuid
import warnings
import zipfile
from pathlib import Path

import fsspec
import numpy as np
import pytest
import torch
from PIL import Image

from genframe import GenframeError
from genframe_plugins.data import _cache as _datacache, image_folder
from genframe_plugins.data.image_folder import CelebA, ImageFolder, Preprocess, decode_image

RNG = np.random.default_rng(0)
CAT_A = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
CAT_B = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
DOG = np.full((8, 8, 3), (200, 40, 90), dtype=np.uint8)  # uniform: survives JPEG almost exactly


def png(array: np.ndarray, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", **save)
    return buffer.getvalue()


def jpeg(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


# Relative path -> content. Two classes, one nested folder, a corrupt image, and files that are not images.
FOLDER = {
    "cats/a.png": png(CAT_A),
    "cats/more/b.png": png(CAT_B),
    "dogs/c.jpg": jpeg(DOG),
    "dogs/broken.png": b"\x89PNG not really",
    "dogs/notes.txt": b"not an image",
    "dogs/.thumb.png": b"hidden files are ignored",
    "__MACOSX/dogs/._c.jpg": b"macOS resource forks are ignored",
}


@pytest.fixture(autouse=True)
def cache_in_tmp(tmp_path, monkeypatch):
    """No test writes to the user's cache: the default cache folder lives in the test's folder."""
    monkeypatch.setenv("GENFRAME_CACHE", str(tmp_path / "genframe-cache"))
    return tmp_path / "genframe-cache" / "data"


def write_local(root: Path, files: dict[str, bytes]) -> str:
    for name, content in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(content)
    return str(root)


@pytest.fixture
def memory_root():
    fs = fsspec.filesystem("memory")
    root = f"/genframe-images-{uuid.uuid4().hex}"
    fs.makedirs(root, exist_ok=True)
    yield fs, root
    fs.rm(root, recursive=True)


def zip_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def tar_gz_bytes(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def load_quietly(dataset):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        images, labels = dataset.load()
    return images, labels, [str(w.message) for w in caught]


def assert_folder_content(images: torch.Tensor, labels: torch.Tensor | None) -> None:
    """The sorted files are cats/a.png, cats/more/b.png, dogs/c.jpg (broken.png is skipped)."""
    assert images.shape == (3, 3, 8, 8) and images.dtype == torch.uint8
    assert np.array_equal(images[0].permute(1, 2, 0).numpy(), CAT_A)
    assert np.array_equal(images[1].permute(1, 2, 0).numpy(), CAT_B)
    assert (images[2].permute(1, 2, 0).int() - torch.tensor(DOG).int()).abs().max() <= 3  # JPEG
    if labels is not None:
        assert labels.dtype == torch.int64 and labels.tolist() == [0, 0, 1]


# --------------------------------------------------------------------------- sources


def test_local_folder_with_class_folders_and_one_warning_for_the_corrupt_file(tmp_path):
    root = write_local(tmp_path / "photos", FOLDER)
    images, labels, messages = load_quietly(ImageFolder(root=root, image_size=8, labels=True))
    assert_folder_content(images, labels)
    assert len(messages) == 1
    assert messages[0].startswith(f"image_folder: skipped 1 of 4 images under '{root}' that could not be read "
                                  "or decoded: 'dogs/broken.png' (")


def test_without_labels_the_folders_only_organise(tmp_path):
    root = write_local(tmp_path / "photos", FOLDER)
    dataset = ImageFolder(root=root, image_size=8)
    images, labels, _ = load_quietly(dataset)
    assert labels is None and dataset.class_names() is None
    assert_folder_content(images, None)


def test_class_names_are_the_folders_in_label_order(tmp_path, cache_in_tmp):
    root = write_local(tmp_path / "photos", FOLDER)
    for attempt in ("decoded", "from the cache"):
        dataset = ImageFolder(root=root, image_size=8, labels=True)
        assert dataset.class_names() is None  # known once loaded
        load_quietly(dataset)
        assert dataset.class_names() == ["cats", "dogs"], attempt
    assert any(cache_in_tmp.iterdir())


def test_memory_filesystem(memory_root):
    fs, root = memory_root
    for name, content in FOLDER.items():
        fs.pipe(f"{root}/{name}", content)
    images, labels, messages = load_quietly(ImageFolder(root=f"memory://{root}", image_size=8, labels=True))
    assert_folder_content(images, labels)
    assert len(messages) == 1 and "'dogs/broken.png'" in messages[0]


def test_zip_archive_by_url_and_by_path(tmp_path, memory_root):
    fs, root = memory_root
    fs.pipe(f"{root}/photos.zip", zip_bytes(FOLDER))
    chained = load_quietly(ImageFolder(root=f"zip://::memory://{root}/photos.zip", image_size=8, labels=True))
    assert_folder_content(*chained[:2])
    local_zip = tmp_path / "photos.zip"
    local_zip.write_bytes(zip_bytes(FOLDER))
    by_path = load_quietly(ImageFolder(root=str(local_zip), image_size=8, labels=True))
    assert_folder_content(*by_path[:2])


def test_tar_gz_archive_by_path(tmp_path):
    archive = tmp_path / "photos.tar.gz"
    archive.write_bytes(tar_gz_bytes(FOLDER))
    images, labels, _ = load_quietly(ImageFolder(root=str(archive), image_size=8, labels=True))
    assert_folder_content(images, labels)


def test_limit_decodes_only_a_seeded_subset(tmp_path, monkeypatch):
    files = {f"img{i:02d}.png": png(np.full((4, 4), i * 10, np.uint8)) for i in range(20)}
    root = write_local(tmp_path / "grey", files)
    calls = count_decodes(monkeypatch)
    images, _, _ = load_quietly(ImageFolder(root=root, image_size=4, limit=5, subset_seed=2, cache=False))
    keep = torch.randperm(20, generator=torch.Generator().manual_seed(2))[:5].sort().values
    assert len(calls) == 5
    assert images.shape == (5, 1, 4, 4) and images[:, 0, 0, 0].tolist() == (keep * 10).tolist()


# --------------------------------------------------------------------------- decoding policies


def decode(array: np.ndarray, **prep) -> np.ndarray:
    return decode_image(png(array), Preprocess(**prep))


def test_fit_policies_on_a_wide_image():
    wide = np.zeros((4, 8), np.uint8)
    wide[:, 2:6] = 255  # white centre square, black sides
    assert np.array_equal(decode(wide, size=4, fit="crop")[:, :, 0], np.full((4, 4), 255))
    padded = decode(wide, size=8, fit="pad")[:, :, 0]
    assert np.array_equal(padded[2:6], wide) and not padded[:2].any() and not padded[6:].any()
    halves = np.zeros((4, 8), np.uint8)
    halves[:, 4:] = 200
    stretched = decode(halves, size=4, fit="resize")[:, :, 0]  # the whole width, squeezed 2x
    assert (stretched[:, 0] == 0).all() and (stretched[:, 3] == 200).all()
    assert (0 < stretched[:, 1]).all() and (stretched[:, 1] < stretched[:, 2]).all() and (stretched[:, 2] < 200).all()


def test_crop_cuts_a_centred_square_before_resizing():
    image = np.zeros((12, 10), np.uint8)
    image[3:9, 2:8] = 255  # a white 6x6 square in the centre
    assert np.array_equal(decode(image, size=6, crop=6)[:, :, 0], np.full((6, 6), 255))
    assert decode(image, size=3, crop=6)[:, :, 0].tolist() == [[255] * 3] * 3
    assert decode(image, size=8, crop=8)[0, 0, 0] == 0  # a larger crop includes the black border
    with pytest.raises(GenframeError, match="crop: 11 exceeds the 10x12 image"):
        decode(image, size=4, crop=11)


def test_uniform_images_keep_their_colour_through_any_resize():
    red = np.full((30, 50, 3), (250, 10, 60), np.uint8)
    for fit in ("crop", "resize"):
        out = decode(red, size=7, fit=fit)
        assert out.shape == (7, 7, 3) and (out == (250, 10, 60)).all()


def test_colour_conversion():
    rgb = np.full((4, 4, 3), (255, 0, 0), np.uint8)
    assert decode(rgb, size=4, color="grayscale").shape == (4, 4, 1)
    assert (decode(rgb, size=4, color="grayscale") == 76).all()  # ITU-R 601-2 luma of pure red
    grey = np.full((4, 4), 77, np.uint8)
    assert decode(grey, size=4).shape == (4, 4, 1)  # auto keeps greyscale single-channel
    assert (decode(grey, size=4, color="rgb") == 77).all() and decode(grey, size=4, color="rgb").shape == (4, 4, 3)


def test_transparent_pixels_become_black_and_16_bit_keeps_its_range():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 200, 30, 255)  # opaque
    rgba[1, 1] = (255, 255, 255, 0)  # transparent white
    out = decode(rgba, size=2)
    assert out[0, 0].tolist() == [10, 200, 30] and out[1, 1].tolist() == [0, 0, 0]
    deep = np.full((2, 2), 51000, np.uint16)
    assert (decode(deep, size=2) == 51000 >> 8).all()


def test_exif_orientation_is_applied():
    tall = np.zeros((4, 2, 3), np.uint8)
    tall[0] = 255  # white top row
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    out = decode_image(png(tall, exif=exif), Preprocess(size=4, fit="pad"))
    # displayed upright, the 2x4 image is 4 wide and 2 high (padded to rows 1..2), its top row now on the right
    assert (out[1:3, 3] == 255).all() and not out[1:3, :3].any() and not out[[0, 3]].any()


@pytest.mark.parametrize("chunk", [1, 256])  # greyscale and colour in one read chunk, or in different ones
def test_mixed_folder_is_rgb_and_greyscale_folder_one_channel(tmp_path, monkeypatch, chunk):
    monkeypatch.setattr(image_folder, "CHUNK", chunk)
    grey = np.full((4, 4), 99, np.uint8)
    root = write_local(tmp_path / "mixed", {"a.png": png(grey), "b.png": png(np.full((4, 4, 3), 5, np.uint8)),
                                            "c.png": png(grey + 1)})
    images, _, _ = load_quietly(ImageFolder(root=root, image_size=4, cache=False))
    assert images.shape == (3, 3, 4, 4) and (images[0] == 99).all() and (images[1] == 5).all()
    assert (images[2] == 100).all()
    only_grey = write_local(tmp_path / "grey", {"a.png": png(grey)})
    assert ImageFolder(root=only_grey, image_size=4, cache=False).load()[0].shape == (1, 1, 4, 4)


# --------------------------------------------------------------------------- errors


def test_missing_empty_and_imageless_folders_name_the_url(tmp_path, memory_root):
    with pytest.raises(GenframeError, match=f"^image_folder: root: nothing at '{tmp_path}/absent'$"):
        ImageFolder(root=str(tmp_path / "absent")).load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(GenframeError, match=f"^image_folder: root: '{tmp_path}/empty' is an empty folder$"):
        ImageFolder(root=str(tmp_path / "empty")).load()
    fs, root = memory_root
    with pytest.raises(GenframeError, match=f"^image_folder: root: 'memory://{root}' is an empty folder$"):
        ImageFolder(root=f"memory://{root}").load()
    docs = write_local(tmp_path / "docs", {"readme.txt": b"x", "sub/notes.md": b"y"})
    with pytest.raises(GenframeError) as info:
        ImageFolder(root=docs).load()
    assert str(info.value) == (f"image_folder: root: no images under '{docs}' (2 other files, e.g. 'readme.txt'; "
                               "image files end in .bmp, .gif, .jpeg, .jpg, .pbm, .pgm, .png, .pnm, .ppm, .tif, "
                               ".tiff, .webp)")


def test_only_corrupt_images_is_an_error(tmp_path):
    root = write_local(tmp_path / "bad", {"a.png": b"junk", "b.jpg": jpeg(DOG)[:40]})
    with pytest.raises(GenframeError, match=f"^image_folder: none of the 2 images under '{root}' could be read or "
                                            r"decoded \(e.g. 'a.png': not an image format Pillow can read\)$"):
        ImageFolder(root=root, cache=False).load()


def test_labels_need_class_folders(tmp_path):
    root = write_local(tmp_path / "loose", {"a.png": png(CAT_A), "cats/b.png": png(CAT_B)})
    with pytest.raises(GenframeError, match=r"^image_folder: labels: true needs every image in a class sub-folder, "
                                            f"but 1 lie directly in '{root}' \\(e.g. 'a.png'\\)$"):
        ImageFolder(root=root, labels=True).load()


def test_files_that_are_not_archives_and_broken_archives(tmp_path):
    (tmp_path / "photo.png").write_bytes(png(CAT_A))
    with pytest.raises(GenframeError, match="^image_folder: root: '.*photo.png' is a file, not a folder or an "
                                            r"archive \(.zip, .tar, .tar.gz, .tgz, .tar.bz2, .tar.xz\)$"):
        ImageFolder(root=str(tmp_path / "photo.png")).load()
    (tmp_path / "broken.zip").write_bytes(b"PK not a zip")
    with pytest.raises(GenframeError, match="^image_folder: root: cannot read the archive '.*broken.zip': "):
        ImageFolder(root=str(tmp_path / "broken.zip")).load()
    with pytest.raises(GenframeError, match="^image_folder: root: cannot open 'nosuchprotocol://x': "):
        ImageFolder(root="nosuchprotocol://x").load()


# --------------------------------------------------------------------------- the decoded-image cache


def count_decodes(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = image_folder.decode_image

    def counting(raw, prep):
        calls.append(1)
        return real(raw, prep)

    monkeypatch.setattr(image_folder, "decode_image", counting)
    return calls


def test_second_load_reads_the_cache_instead_of_decoding(tmp_path, monkeypatch, cache_in_tmp):
    root = write_local(tmp_path / "photos", FOLDER)
    calls = count_decodes(monkeypatch)
    first, first_labels, first_messages = load_quietly(ImageFolder(root=root, image_size=8, labels=True))
    assert len(calls) == 4  # three images and the corrupt file
    cached = list(cache_in_tmp.iterdir())
    assert len(cached) == 1 and cached[0].name.startswith("image_folder-") and cached[0].suffix == ".pt"

    second, second_labels, second_messages = load_quietly(ImageFolder(root=root, image_size=8, labels=True))
    assert len(calls) == 4  # nothing decoded the second time
    assert torch.equal(first, second) and torch.equal(first_labels, second_labels)
    assert second_messages == first_messages  # the skipped file is still reported
    assert_folder_content(second, second_labels)


def test_changed_preprocessing_or_files_invalidate_the_cache(tmp_path, monkeypatch, cache_in_tmp):
    root = write_local(tmp_path / "photos", FOLDER)
    calls = count_decodes(monkeypatch)
    load_quietly(ImageFolder(root=root, image_size=8))
    assert len(calls) == 4
    small, _, _ = load_quietly(ImageFolder(root=root, image_size=4))
    assert len(calls) == 8 and small.shape == (3, 3, 4, 4)
    load_quietly(ImageFolder(root=root, image_size=8, fit="pad"))
    assert len(calls) == 12
    load_quietly(ImageFolder(root=root, image_size=8))  # the first setting is still cached
    assert len(calls) == 12

    new = np.full((8, 8, 3), 7, np.uint8)
    (tmp_path / "photos" / "cats" / "a.png").write_bytes(png(new, optimize=True))  # a different size
    changed, _, _ = load_quietly(ImageFolder(root=root, image_size=8))
    assert len(calls) == 16 and (changed[0] == 7).all()
    assert len(list(cache_in_tmp.iterdir())) == 3  # a changed source replaces its entry, no stale copy


def test_cache_can_be_disabled_or_placed_elsewhere(tmp_path, monkeypatch, cache_in_tmp):
    root = write_local(tmp_path / "photos", FOLDER)
    calls = count_decodes(monkeypatch)
    load_quietly(ImageFolder(root=root, image_size=8, cache=False))
    load_quietly(ImageFolder(root=root, image_size=8, cache=False))
    assert len(calls) == 8 and not cache_in_tmp.exists()

    fs = fsspec.filesystem("memory")
    folder = f"/genframe-cache-{uuid.uuid4().hex}"
    try:
        load_quietly(ImageFolder(root=root, image_size=8, cache_dir=f"memory://{folder}"))
        again, _, _ = load_quietly(ImageFolder(root=root, image_size=8, cache_dir=f"memory://{folder}"))
        assert len(calls) == 12 and [p.rsplit("/", 1)[1][:13] for p in fs.ls(folder, detail=False)] == \
            ["image_folder-"]  # no temporary file left behind
        assert_folder_content(again, None)
    finally:
        fs.rm(folder, recursive=True)


def test_unreadable_cache_is_replaced_and_unwritable_cache_only_warns(tmp_path, monkeypatch, cache_in_tmp):
    root = write_local(tmp_path / "photos", FOLDER)
    calls = count_decodes(monkeypatch)
    load_quietly(ImageFolder(root=root, image_size=8))
    entry, = cache_in_tmp.iterdir()
    entry.write_bytes(b"truncated")
    images, _, messages = load_quietly(ImageFolder(root=root, image_size=8))
    assert len(calls) == 8 and any(m.startswith(f"image_folder: ignoring the unreadable decoded-image cache "
                                                f"{entry}") for m in messages)
    assert_folder_content(images, None)
    assert torch.equal(load_quietly(ImageFolder(root=root, image_size=8))[0], images) and len(calls) == 8

    blocker = tmp_path / "not-a-folder"
    blocker.write_bytes(b"")
    images, _, messages = load_quietly(ImageFolder(root=root, image_size=8, cache_dir=str(blocker)))
    assert any(m.startswith(f"image_folder: could not write the decoded-image cache to {blocker}/image_folder-")
               for m in messages)
    assert_folder_content(images, None)


def test_default_cache_folder_follows_genframe_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("GENFRAME_CACHE", str(tmp_path / "c"))
    assert _datacache.default_cache_folder() == f"{tmp_path}/c/data"
    monkeypatch.delenv("GENFRAME_CACHE")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert _datacache.default_cache_folder() == f"{tmp_path}/home/.cache/genframe/data"


# --------------------------------------------------------------------------- CelebA


def face(index: int) -> np.ndarray:
    """A 10x12 (width x height) 'aligned face': a uniform 6x6 centre of value 10 * index on a black frame."""
    image = np.zeros((12, 10, 3), np.uint8)
    image[3:9, 2:8] = 10 * index
    return image


def write_celeba(root: Path, n: int = 6, *, kaggle: bool = False) -> list[str]:
    """torchvision's layout (root/celeba/...) with .txt lists, or Kaggle's nested folder with .csv lists."""
    names = [f"{i:06d}.jpg" for i in range(1, n + 1)]
    partition = [i % 3 for i in range(n)]  # 0 train, 1 valid, 2 test in turn
    male = [1 if i % 2 else -1 for i in range(n)]
    base = root if kaggle else root / "celeba"
    images = base / "img_align_celeba" / ("img_align_celeba" if kaggle else "")
    images.mkdir(parents=True)
    for i, name in enumerate(names, 1):
        (images / name).write_bytes(png(face(i)))  # PNG content keeps pixels exact; Pillow reads by content
    if kaggle:
        (base / "list_eval_partition.csv").write_text(
            "image_id,partition\n" + "".join(f"{n},{p}\n" for n, p in zip(names, partition)))
        (base / "list_attr_celeba.csv").write_text(
            "image_id,Eyeglasses,Male\n" + "".join(f"{n},-1,{m}\n" for n, m in zip(names, male)))
    else:
        (base / "list_eval_partition.txt").write_text("".join(f"{n} {p}\n" for n, p in zip(names, partition)))
        (base / "list_attr_celeba.txt").write_text(
            f"{n}\nEyeglasses Male \n" + "".join(f"{n}  -1 {m:2d}\n" for n, m in zip(names, male)))
    return names


@pytest.mark.parametrize("kaggle", [False, True])
def test_celeba_splits_crop_and_attribute_labels(tmp_path, kaggle):
    write_celeba(tmp_path, kaggle=kaggle)
    images, labels, messages = load_quietly(CelebA(root=str(tmp_path), crop=6, image_size=6, attribute="Male"))
    assert messages == []
    assert images.shape == (2, 3, 6, 6)  # images 1 and 4 are in the training split
    assert (images[0] == 10).all() and (images[1] == 40).all()  # the centre crop holds only the face
    assert labels.tolist() == [0, 1]
    test, no_labels, _ = load_quietly(CelebA(root=str(tmp_path), split="test", crop=6, image_size=3))
    assert no_labels is None and test.shape == (2, 3, 3, 3) and test[:, 0, 0, 0].tolist() == [30, 60]
    every, _, _ = load_quietly(CelebA(root=str(tmp_path), split="all", crop=None, image_size=10))
    assert every.shape == (6, 3, 10, 10) and every[:, 0, 5, 5].tolist() == [10, 20, 30, 40, 50, 60]
    assert every[:, :, 0].sum() == 0  # the largest centred square (10x10) still shows the frame's top row


def test_celeba_default_crop_and_size_on_real_dimensions(tmp_path):
    base = tmp_path / "img_align_celeba"
    base.mkdir()
    image = np.zeros((218, 178, 3), np.uint8)
    image[39:179, 19:159] = (120, 80, 40)  # exactly the 140x140 centre square
    (base / "000001.jpg").write_bytes(png(image))
    images, _, _ = load_quietly(CelebA(root=str(tmp_path), split="all"))
    assert images.shape == (1, 3, 64, 64)
    assert (images[0].permute(1, 2, 0) == torch.tensor([120, 80, 40], dtype=torch.uint8)).all()


def test_celeba_uses_the_cache_and_reports_missing_files(tmp_path, monkeypatch):
    names = write_celeba(tmp_path)
    (tmp_path / "celeba" / "img_align_celeba" / names[3]).unlink()  # 000004.jpg: a training image
    calls = count_decodes(monkeypatch)
    first, _, messages = load_quietly(CelebA(root=str(tmp_path), crop=6, image_size=6))
    assert first.shape == (1, 3, 6, 6) and len(calls) == 1
    assert len(messages) == 1 and "skipped 1 of 2 images" in messages[0] and "'000004.jpg' (unreadable:" in messages[0]
    second, _, _ = load_quietly(CelebA(root=str(tmp_path), crop=6, image_size=6))
    assert torch.equal(first, second) and len(calls) == 1
    load_quietly(CelebA(root=str(tmp_path), crop=4, image_size=6))
    assert len(calls) == 2


def test_celeba_errors(tmp_path):
    with pytest.raises(GenframeError) as info:
        CelebA(root=str(tmp_path)).load()
    assert str(info.value) == (f"celeba: no img_align_celeba folder under root '{tmp_path}' or its celeba "
                               "folder; set `download: true` to fetch it with torchvision")
    with pytest.raises(GenframeError, match="^celeba: download: only a local root can be downloaded to"):
        CelebA(root=f"memory://genframe-empty-{uuid.uuid4().hex}", download=True).load()

    write_celeba(tmp_path)
    base = tmp_path / "celeba"
    with pytest.raises(GenframeError, match="^celeba: attribute: 'Smiling' is not a column of list_attr_celeba.txt; "
                                            "known: Eyeglasses, Male$"):
        CelebA(root=str(tmp_path), attribute="Smiling").load()
    with pytest.raises(GenframeError, match=r"^celeba: crop: 140 exceeds the 10x12 image \(000001.jpg\)$"):
        CelebA(root=str(tmp_path), cache=False).load()
    (base / "list_attr_celeba.txt").write_text("1\nMale\n000001.jpg 1\n")
    with pytest.raises(GenframeError, match="^celeba: list_attr_celeba.txt has no row for 000004.jpg$"):
        CelebA(root=str(tmp_path), attribute="Male").load()
    (base / "list_attr_celeba.txt").unlink()
    with pytest.raises(GenframeError, match="^celeba: attribute: needs list_attr_celeba.txt next to "):
        CelebA(root=str(tmp_path), attribute="Male").load()
    (base / "list_eval_partition.txt").write_text("000001.jpg 0\n000002.jpg train\n")
    with pytest.raises(GenframeError, match="^celeba: list_eval_partition.txt line 2: expected '<image> <0|1|2>', "
                                            "got '000002.jpg train'$"):
        CelebA(root=str(tmp_path)).load()
    (base / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    with pytest.raises(GenframeError, match="^celeba: list_eval_partition.txt lists no images of split test$"):
        CelebA(root=str(tmp_path), split="test").load()
    (base / "list_eval_partition.txt").unlink()
    with pytest.raises(GenframeError, match="^celeba: split: valid needs list_eval_partition.txt next to "
                                            f"img_align_celeba under root '{tmp_path}'; use split: all, or "
                                            "download: true$"):
        CelebA(root=str(tmp_path), split="valid").load()


def test_celeba_download_goes_through_torchvision(tmp_path, monkeypatch):
    import torchvision.datasets

    calls = []

    class FakeTorchvision:  # stands in for Google Drive: leaves torchvision's layout behind
        def __init__(self, root, split, target_type, download):
            calls.append((root, split, target_type, download))
            write_celeba(Path(root))

    monkeypatch.setattr(torchvision.datasets, "CelebA", FakeTorchvision)
    images, _, _ = load_quietly(CelebA(root=str(tmp_path), download=True, crop=6, image_size=6, cache=False))
    assert calls == [(str(tmp_path), "all", [], True)] and images[:, 0, 0, 0].tolist() == [10, 40]


def test_celeba_names_the_two_values_of_its_attribute():
    assert CelebA(root="unused", attribute="Smiling").class_names() == ["not Smiling", "Smiling"]
    assert CelebA(root="unused").class_names() is None
