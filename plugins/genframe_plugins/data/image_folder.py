"""Data sets of encoded image files: the user's own folder or archive (``image_folder``) and CelebA.

Both read files through fsspec, decode them with Pillow on a thread pool (Pillow releases the GIL
while decoding), bring every image to one square size, and keep the result in the decoded-image
cache so that only the first run pays for decoding. A file that cannot be read or decoded is
skipped: one bad JPEG among a hundred thousand should not stop a run, but the user hears about
every skipped file in a single warning.
"""

from __future__ import annotations

import io
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import attrs
from fsspec.implementations.tar import TarFileSystem
from fsspec.implementations.zip import ZipFileSystem
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError
import torch

from genframe import Dataset, GenframeError, component, hookimpl, param

from genframe_plugins.data._cache import DecodedCache, source_identity
from genframe_plugins.data._io import download_with_torchvision, join, open_location, relative, subset_positions

IMAGE_EXTENSIONS = (".bmp", ".gif", ".jpeg", ".jpg", ".pbm", ".pgm", ".png", ".pnm", ".ppm", ".tif", ".tiff",
                    ".webp")
ARCHIVE_SUFFIXES = {".zip": ZipFileSystem, ".tar": TarFileSystem, ".tar.gz": TarFileSystem,
                    ".tgz": TarFileSystem, ".tar.bz2": TarFileSystem, ".tar.xz": TarFileSystem}
GREY_MODES = {"1", "L", "LA", "La", "I", "F"}
CHUNK = 256  # files read per round trip: lets object stores fetch them concurrently
SHOWN = 3  # skipped files named in the warning


@attrs.frozen
class Preprocess:
    """How every decoded image is brought to ``size`` x ``size``; part of the cache key."""

    size: int
    fit: str = "crop"  # crop: centred square; resize: stretch; pad: fit inside, black borders
    color: str = "auto"  # auto: greyscale data stay one channel; rgb; grayscale
    crop: int | None = None  # side of a centred square cut first (CelebA's convention)


def decode_image(raw: bytes, prep: Preprocess) -> np.ndarray:
    """One encoded image -> uint8 (size, size, 1 or 3), upright as its EXIF orientation says."""
    with Image.open(io.BytesIO(raw)) as opened:
        opened.load()  # decode now: truncated files fail here, inside the caller's error handling
        image = _to_color(ImageOps.exif_transpose(opened), prep.color)
        array = np.asarray(_fit(image, prep))
    return array[:, :, None] if array.ndim == 2 else array


def _to_color(image: Image.Image, color: str) -> Image.Image:
    if color == "auto":
        grey = image.mode in GREY_MODES or image.mode.startswith("I;16")
    else:
        grey = color == "grayscale"
    if image.mode.startswith("I;16"):  # 16-bit greyscale: keep the high byte (Pillow's convert would clip)
        image = Image.fromarray((np.asarray(image) >> 8).astype(np.uint8))
    if "A" in image.getbands() or "a" in image.getbands() or "transparency" in image.info:
        # transparent pixels hold arbitrary colours: composite them onto black, like pad's borders
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return image.convert("L" if grey else "RGB")


def _centred_square(image: Image.Image, side: int) -> Image.Image:
    width, height = image.size
    left, top = (width - side) // 2, (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def _fit(image: Image.Image, prep: Preprocess) -> Image.Image:
    # Crops are cut before resampling: resizing with a box would blend in pixels from outside it.
    if prep.crop is not None:
        if prep.crop > min(image.size):
            raise GenframeError(f"crop: {prep.crop} exceeds the {image.width}x{image.height} image")
        image = _centred_square(image, prep.crop)
    size, bilinear = prep.size, Image.Resampling.BILINEAR  # antialiased when shrinking
    if prep.fit == "crop":
        return _centred_square(image, min(image.size)).resize((size, size), bilinear)
    if prep.fit == "resize":
        return image.resize((size, size), bilinear)
    scale = size / max(image.size)
    inner = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    canvas = Image.new(image.mode, (size, size))
    canvas.paste(image.resize(inner, bilinear), ((size - inner[0]) // 2, (size - inner[1]) // 2))
    return canvas


def _reason(exc: BaseException) -> str:
    """An exception as one short line, for warnings and errors that must stay one line."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())


def _decode_or_reason(raw: bytes | Exception, prep: Preprocess) -> np.ndarray | str | GenframeError:
    """The decoded image, or why it could not be had: a string for a bad file, an error for a bad setting."""
    if isinstance(raw, BaseException):
        return f"unreadable: {_reason(raw)}"
    try:
        return decode_image(raw, prep)
    except GenframeError as exc:
        return exc
    except UnidentifiedImageError:
        return "not an image format Pillow can read"
    except Exception as exc:  # Pillow raises many types for damaged files; each only skips that file
        return _reason(exc)


def decode_files(fs: Any, paths: list[str], names: list[str], prep: Preprocess, who: str
                 ) -> tuple[torch.Tensor | None, list[int], list[list[str]]]:
    """Decode ``paths`` in order: (uint8 N x C x size x size or None, positions kept, [name, reason] skipped).

    Reads go through ``cat_ranges`` chunk by chunk (concurrent on object stores and HTTP, in order on
    archives, whose single file handle threads must not share); decoding runs on a thread pool. The
    data are greyscale (C = 1) only if every image is, under ``color: auto``.
    """
    from tqdm.auto import tqdm

    chunks: list[np.ndarray] = []
    kept: list[int] = []
    skipped: list[list[str]] = []
    workers = min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool, tqdm(total=len(paths), desc=f"{who}: decoding", unit="image",
                                                   disable=None, leave=False) as bar:
        for start in range(0, len(paths), CHUNK):
            raws = fs.cat_ranges(paths[start:start + CHUNK], None, None, on_error="return")
            arrays = []
            for offset, result in enumerate(pool.map(lambda raw: _decode_or_reason(raw, prep), raws)):
                if isinstance(result, GenframeError):
                    raise GenframeError(f"{who}: {result} ({names[start + offset]})")
                if isinstance(result, str):
                    skipped.append([names[start + offset], result])
                else:
                    arrays.append(result)
                    kept.append(start + offset)
            if arrays:
                channels = max(a.shape[2] for a in arrays)
                chunks.append(np.stack([np.repeat(a, channels // a.shape[2], axis=2) for a in arrays]))
            bar.update(len(raws))
    if not chunks:
        return None, kept, skipped
    channels = max(c.shape[3] for c in chunks)
    images = torch.empty((len(kept), channels, prep.size, prep.size), dtype=torch.uint8)
    position = 0
    while chunks:
        chunk = torch.from_numpy(chunks.pop(0)).permute(0, 3, 1, 2)
        images[position:position + chunk.shape[0]] = chunk.expand(-1, channels, -1, -1)
        position += chunk.shape[0]
    return images, kept, skipped


def warn_skipped(who: str, url: str, skipped: list[list[str]], total: int) -> None:
    """One warning for all the files that could not be used, naming the first few."""
    if not skipped:
        return
    shown = ", ".join(f"{name!r} ({reason})" for name, reason in skipped[:SHOWN])
    more = f" and {len(skipped) - SHOWN} more" if len(skipped) > SHOWN else ""
    warnings.warn(f"{who}: skipped {len(skipped)} of {total} images under {url!r} that could not be read or "
                  f"decoded: {shown}{more}", stacklevel=4)


def load_decoded(who: str, url: str, fs: Any, paths: list[str], names: list[str], labels: list[int] | None,
                 prep: Preprocess, cache: DecodedCache | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Images (and labels) of ``paths`` from the cache, or decoded and then cached; skipped files warned of."""
    payload = cache.load() if cache is not None else None
    if payload is None:
        images, kept, skipped = decode_files(fs, paths, names, prep, who)
        if images is None:
            name, reason = skipped[0]
            raise GenframeError(f"{who}: none of the {len(paths)} images under {url!r} could be read or decoded "
                                f"(e.g. {name!r}: {reason})")
        y = None if labels is None else torch.tensor([labels[i] for i in kept], dtype=torch.int64)
        if cache is not None:
            cache.store(images, y, skipped)
    else:
        images, y, skipped = payload["images"], payload["labels"], payload["skipped"]
    warn_skipped(who, url, skipped, len(paths))
    return images, y


def _is_hidden(name: str) -> bool:
    """Dot files and macOS's ``__MACOSX`` resource forks look like images by name but are not."""
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


# --------------------------------------------------------------------------- image_folder


@component("dataset", "image_folder")
class ImageFolder(Dataset):
    """Your own images: every image file under a folder or archive at any fsspec URL, searched recursively.

    ``root`` may be a local folder, ``memory://``, ``s3://bucket/photos`` (with s3fs), an archive URL
    such as ``zip://::photos.zip``, or simply a path to a .zip/.tar(.gz) file. With ``labels: true``
    the first folder level names each image's class (sorted names -> 0, 1, ...).
    """

    root: str = param(help="folder or archive of images: a path, an fsspec URL, or a .zip/.tar(.gz) file")
    image_size: int = param(64, ge=1, help="side of the square images produced")
    fit: Literal["crop", "resize", "pad"] = param(
        "crop", help="crop: centred square of the shorter side; resize: stretch; pad: whole image, black borders")
    color: Literal["auto", "rgb", "grayscale"] = param(
        "auto", help="auto: one channel if every image is greyscale, else RGB")
    labels: bool = param(False, help="label each image by its first-level sub-folder (for conditional models)")
    limit: int | None = param(None, ge=1, help="decode only a seeded random subset of this many files")
    subset_seed: int = param(0, help="seed of the subset chosen by limit")
    cache: bool = param(True, help="keep the decoded images in a cache file so later runs skip decoding")
    cache_dir: str | None = param(None, help="cache folder (fsspec URL); default $GENFRAME_CACHE/data or "
                                             "~/.cache/genframe/data")

    def preflight(self) -> None:
        fs, root, _ = self._open()
        self._list_images(fs, root)  # the folder is there and holds images

    def load(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        fs, root, source = self._open()
        listing = self._list_images(fs, root)
        names = [name for name, _ in listing]
        classes = self._classes(names)
        self._class_names = sorted(classes, key=classes.__getitem__) if self.labels else None
        identity = source_identity(listing)
        keep = subset_positions(len(names), self.limit, self.subset_seed)
        if keep is not None:
            names = [names[i] for i in keep.tolist()]
        labels = [classes[name.split("/", 1)[0]] for name in names] if self.labels else None
        prep = Preprocess(self.image_size, self.fit, self.color)
        cache = DecodedCache(self.type_name, self.cache_dir, {
            "source": source, "preprocess": attrs.asdict(prep), "labels": self.labels,
            "subset": [self.limit, self.subset_seed]}, identity) if self.cache else None
        paths = [join(root, name) for name in names]
        return load_decoded(self.type_name, self.root, fs, paths, names, labels, prep, cache)

    def class_names(self) -> list[str] | None:
        """The class sub-folders' names, in label order (after ``load``, with ``labels: true``)."""
        return getattr(self, "_class_names", None)

    def _open(self) -> tuple[Any, str, str]:
        """(filesystem, folder path, absolute source URL); a .zip/.tar file is opened as a folder."""
        fs, root = open_location(self.root, self.type_name)
        source = self.root if "::" in self.root else fs.unstrip_protocol(root)
        try:
            is_file = fs.isfile(root)
            exists = is_file or fs.isdir(root)
        except Exception as exc:  # permissions, network errors
            raise GenframeError(f"{self.type_name}: root: cannot read {self.root!r}: {exc}") from None
        if not exists:
            raise GenframeError(f"{self.type_name}: root: nothing at {self.root!r}")
        if not is_file:
            return fs, root, source
        suffix = next((s for s in ARCHIVE_SUFFIXES if root.lower().endswith(s)), None)
        if suffix is None:
            raise GenframeError(f"{self.type_name}: root: {self.root!r} is a file, not a folder or an archive "
                                f"({', '.join(ARCHIVE_SUFFIXES)})")
        try:
            archive = ARCHIVE_SUFFIXES[suffix](fo=fs.open(root, "rb"), skip_instance_cache=True)
        except Exception as exc:
            raise GenframeError(f"{self.type_name}: root: cannot read the archive {self.root!r}: {exc}") from None
        return archive, "", source

    def _list_images(self, fs: Any, root: str) -> list[tuple[str, dict]]:
        """Sorted (path relative to root, listing info) of the image files; empty or image-less is an error."""
        found = sorted((relative(path, root), info) for path, info in fs.find(root, detail=True).items()
                       if info.get("type", "file") == "file")
        if not found:
            raise GenframeError(f"{self.type_name}: root: {self.root!r} is an empty folder")
        images = [(name, info) for name, info in found
                  if name.lower().endswith(IMAGE_EXTENSIONS) and not _is_hidden(name)]
        if not images:
            raise GenframeError(f"{self.type_name}: root: no images under {self.root!r} ({len(found)} other "
                                f"files, e.g. {found[0][0]!r}; image files end in {', '.join(IMAGE_EXTENSIONS)})")
        return images

    def _classes(self, names: list[str]) -> dict[str, int]:
        """Class index of each first-level folder, in sorted order."""
        if not self.labels:
            return {}
        loose = [name for name in names if "/" not in name]
        if loose:
            raise GenframeError(f"{self.type_name}: labels: true needs every image in a class sub-folder, but "
                                f"{len(loose)} lie directly in {self.root!r} (e.g. {loose[0]!r})")
        return {folder: i for i, folder in enumerate(sorted({name.split("/", 1)[0] for name in names}))}


# --------------------------------------------------------------------------- CelebA


CELEBA_IMAGES = "img_align_celeba"
CELEBA_SPLITS = {"train": 0, "valid": 1, "test": 2}


@component("dataset", "celeba")
class CelebA(Dataset):
    """CelebA's 202,599 aligned faces (178x218 JPEGs), centre-cropped and resized, in the official splits.

    Reads ``img_align_celeba/`` and ``list_eval_partition.txt`` (or Kaggle's ``.csv``) from ``root`` or
    ``root/celeba`` (torchvision's layout). The default 140-pixel centre crop resized to 64 follows the
    WAE paper; ``attribute`` turns one of the 40 binary attributes into 0/1 labels.
    """

    root: str = param("data/celeba", help="folder or fsspec URL holding img_align_celeba/ and the list files")
    split: Literal["train", "valid", "test", "all"] = param(
        "train", help="official partition: train 162,770, valid 19,867, test 19,962 images; all: every image")
    image_size: int = param(64, ge=1, help="side of the square images produced")
    crop: int | None = param(140, ge=1, help="side of the centred square cut before resizing; null: the "
                                             "largest one (178)")
    attribute: str | None = param(None, help="list_attr_celeba column used as 0/1 labels, e.g. Male or Smiling")
    limit: int | None = param(None, ge=1, help="decode only a seeded random subset of this many images")
    subset_seed: int = param(0, help="seed of the subset chosen by limit")
    download: bool = param(False, help="fetch the data with torchvision (Google Drive; local roots only)")
    cache: bool = param(True, help="keep the decoded images in a cache file so later runs skip decoding")
    cache_dir: str | None = param(None, help="cache folder (fsspec URL); default $GENFRAME_CACHE/data or "
                                             "~/.cache/genframe/data")

    def planned_shape(self) -> tuple[int | None, int, int]:
        count = {"train": 162_770, "valid": 19_867, "test": 19_962, "all": 202_599}[self.split]
        return min(count, self.limit or count), 3, self.image_size

    def preflight(self) -> None:
        self._located()

    def _located(self) -> tuple[Any, str, str]:
        """(filesystem, root, the folder holding img_align_celeba/), fetched first when ``download`` is set."""
        fs, root = open_location(self.root, self.type_name)
        base = self._base(fs, root)
        if base is None:
            if not self.download:
                raise GenframeError(f"{self.type_name}: no {CELEBA_IMAGES} folder under root {self.root!r} or "
                                    f"its celeba folder; set `download: true` to fetch it with torchvision")
            download_with_torchvision(fs, self.root, self.type_name, lambda: self._torchvision(root))
            base = self._base(fs, root)
            if base is None:
                raise GenframeError(f"{self.type_name}: download into {self.root!r} left no {CELEBA_IMAGES} "
                                    "folder")
        return fs, root, base

    def load(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        fs, _, base = self._located()
        folder = self._image_folder(fs, base)
        listing = {relative(path, folder): info for path, info in fs.find(folder, detail=True).items()
                   if path.lower().endswith((".jpg", ".jpeg", ".png"))}
        names, tables = self._split_names(fs, base, listing)
        labels = None
        if self.attribute is not None:
            labels, table = self._attribute_labels(fs, base, names)
            tables.append(table)
        keep = subset_positions(len(names), self.limit, self.subset_seed)
        if keep is not None:
            names = [names[i] for i in keep.tolist()]
            labels = None if labels is None else [labels[i] for i in keep.tolist()]
        prep = Preprocess(self.image_size, "crop", "rgb", self.crop)
        identity = source_identity([(n, listing.get(n, {"size": "missing"})) for n in names] + tables)
        cache = DecodedCache(self.type_name, self.cache_dir, {
            "source": fs.unstrip_protocol(folder), "split": self.split, "preprocess": attrs.asdict(prep),
            "attribute": self.attribute, "subset": [self.limit, self.subset_seed]}, identity) if self.cache else None
        return load_decoded(self.type_name, self.root, fs, [join(folder, n) for n in names], names, labels,
                            prep, cache)

    def class_names(self) -> list[str] | None:
        """``not <attribute>`` and ``<attribute>`` for the 0/1 labels of ``attribute``."""
        return None if self.attribute is None else [f"not {self.attribute}", self.attribute]

    @staticmethod
    def _base(fs: Any, root: str) -> str | None:
        return next((b for b in (root, join(root, "celeba")) if fs.isdir(join(b, CELEBA_IMAGES))), None)

    @staticmethod
    def _image_folder(fs: Any, base: str) -> str:
        folder = join(base, CELEBA_IMAGES)
        nested = join(folder, CELEBA_IMAGES)  # Kaggle's archive nests the folder in itself
        return nested if fs.isdir(nested) else folder

    def _list_file(self, fs: Any, base: str, stem: str) -> tuple[str, list[list[str]], dict] | None:
        """(file name, rows split on whitespace or commas, listing info) of a CelebA list file, if present."""
        for name in (f"{stem}.txt", f"{stem}.csv"):
            path = join(base, name)
            if fs.isfile(path):
                with fs.open(path, "rb") as f:
                    text = f.read().decode("utf-8")
                rows = [line.replace(",", " ").split() for line in text.splitlines() if line.strip()]
                return name, rows, fs.info(path)
        return None

    def _split_names(self, fs: Any, base: str, listing: dict) -> tuple[list[str], list[tuple[str, dict]]]:
        """Image names of the split, in the partition file's order, and the list files they came from."""
        if self.split == "all":
            if not listing:
                raise GenframeError(f"{self.type_name}: no images in {CELEBA_IMAGES} under root {self.root!r}")
            return sorted(listing), []
        found = self._list_file(fs, base, "list_eval_partition")
        if found is None:
            raise GenframeError(f"{self.type_name}: split: {self.split} needs list_eval_partition.txt next to "
                                f"{CELEBA_IMAGES} under root {self.root!r}; use split: all, or download: true")
        name, rows, info = found
        wanted = str(CELEBA_SPLITS[self.split])
        names = []
        for number, row in enumerate(rows, 1):
            if len(row) != 2 or row[1] not in ("0", "1", "2"):
                if number == 1 and len(row) == 2:  # the .csv's header line
                    continue
                raise GenframeError(f"{self.type_name}: {name} line {number}: expected '<image> <0|1|2>', "
                                    f"got {' '.join(row)!r}")
            if row[1] == wanted:
                names.append(row[0])
        if not names:
            raise GenframeError(f"{self.type_name}: {name} lists no images of split {self.split}")
        return names, [(name, info)]

    def _attribute_labels(self, fs: Any, base: str, names: list[str]) -> tuple[list[int], tuple[str, dict]]:
        """0/1 labels of ``names`` from the attribute table (whose -1/1 become 0/1), and that table."""
        found = self._list_file(fs, base, "list_attr_celeba")
        if found is None:
            raise GenframeError(f"{self.type_name}: attribute: needs list_attr_celeba.txt next to {CELEBA_IMAGES} "
                                f"under root {self.root!r}")
        name, rows, info = found
        # .txt: a count line, then the 40 names; .csv: a header line 'image_id,<names>'
        header = rows[1] if name.endswith(".txt") else rows[0][1:]
        body = rows[2:] if name.endswith(".txt") else rows[1:]
        if self.attribute not in header:
            raise GenframeError(f"{self.type_name}: attribute: {self.attribute!r} is not a column of {name}; "
                                f"known: {', '.join(header)}")
        column = header.index(self.attribute) + 1
        values = {row[0]: row[column] for row in body if len(row) > column}
        missing = next((n for n in names if n not in values), None)
        if missing is not None:
            raise GenframeError(f"{self.type_name}: {name} has no row for {missing}")
        return [int(values[n] == "1") for n in names], (name, info)

    @staticmethod
    def _torchvision(root: str) -> None:
        from torchvision.datasets import CelebA as TorchvisionCelebA

        TorchvisionCelebA(root, split="all", target_type=[], download=True)


@hookimpl
def genframe_components():
    return [ImageFolder, CelebA]
