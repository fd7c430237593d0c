"""A folder of images with one class per subfolder (torchvision's ``ImageFolder`` layout), uploaded as a zip or
named as a folder on the server, read as hostile input.

Nothing is decoded or allocated before every declared size has been checked:

1. the zip's members (before ``zipfile`` parses its central directory, the entries are counted, an upper bound on
   ``MAX_MEMBERS``), or the folder's entries (counted while listed, symbolic links and special files refused):
   names (no absolute paths, ``..``, backslashes, drive letters or control characters), zip methods (stored or
   deflate), declared sizes (each at most ``MAX_IMAGE_FILE_BYTES``, all at most the server's file limit),
   compression ratio (at most ``MAX_RATIO``: a zip bomb), duplicates, and the layout ``class/image`` or
   ``top/class/image``;
2. every image's header, read by Pillow restricted to PNG and JPEG: its width times height at most
   ``MAX_IMAGE_PIXELS``, and all of them at most ``MAX_TOTAL_PIXELS`` (the decoding time), and the output tensor
   at most the server's file limit;
3. only then are the images decoded, one at a time (JPEGs at a reduced scale where the output allows), converted
   to RGB (or grey levels), given the ImageNet evaluation view (``images.eval_view``) and normalised straight
   into the one float32 tensor the calibration and evaluation splits share.

Classes are numbered in the sorted order of their folder names, as ``ImageFolder`` numbers them. Every problem
raises ``data.DataError`` naming the file; a refused upload returns nothing, so whatever was loaded stays.
"""

from __future__ import annotations

import io
import os
import stat
import warnings
import zipfile
import zlib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from ..data import DataError, DataSplits, Split
from ..limits import human_bytes, max_file_bytes, too_large
from .images import IMAGENET_MEAN, IMAGENET_STD, eval_view, normalised, resized_shorter_side
from .splits import calibration_indices, check_memory

MAX_MEMBERS = 50_000  # zip entries or folder entries, directories and skipped files included
MAX_IMAGES = 20_000
MAX_IMAGE_FILE_BYTES = 64 << 20
MAX_IMAGE_PIXELS = 40_000_000  # a 40-megapixel photo takes 120 MB decoded as RGB
MAX_TOTAL_PIXELS = 2_000_000_000
MAX_RATIO = 50  # PNG and JPEG are compressed already; deflate barely shrinks them
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
FORMATS = ("PNG", "JPEG")
_SKIPPED_NAMES = {"thumbs.db", "desktop.ini"}
_ZIP_ERRORS = (zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError, RuntimeError,
               NotImplementedError, ValueError, OverflowError, UnicodeError)
_LAYOUT = "images in one folder per class (class/image.png, optionally inside one top-level folder)"


@dataclass(frozen=True)
class ImageEntry:
    """One image file of the dataset: its class folder, its path for messages, its declared size in bytes and a
    function that opens it for binary reading."""

    class_name: str
    path: str
    size: int
    open: Callable[[], io.BufferedIOBase]


def _skipped(parts: list[str]) -> bool:
    """Files a desktop adds to a folder: macOS resource forks (__MACOSX/), hidden files, Thumbs.db, desktop.ini."""
    return parts[0] == "__MACOSX" or any(p.startswith(".") for p in parts) or parts[-1].lower() in _SKIPPED_NAMES


def _check_image_name(path: str, name: str) -> None:
    if not path.lower().endswith(IMAGE_SUFFIXES):
        raise DataError(f"{name}: holds {path[:120]!r}, which is not a PNG or JPEG image (.png, .jpg, .jpeg); the "
                        f"dataset must hold only {_LAYOUT}.")


def _classes_from_paths(paths: list[list[str]], name: str) -> list[str]:
    """The class folder of each image path (split into components): ``class/image`` or ``top/class/image``."""
    depths = {len(p) for p in paths}
    if depths == {2}:
        return [p[0] for p in paths]
    if depths == {3} and len({p[0] for p in paths}) == 1:
        return [p[1] for p in paths]
    odd = next((p for p in paths if len(p) != 2), paths[0])
    raise DataError(f"{name}: {'/'.join(odd)[:120]!r} is not where a class folder's image goes; the dataset must "
                    f"hold {_LAYOUT}, with no images outside the class folders and no deeper folders.")


def _bad_component(part: str) -> bool:
    return part in ("", ".", "..") or any(ord(c) < 32 or ord(c) == 127 for c in part) or ":" in part


def zip_entries(zf: zipfile.ZipFile, name: str) -> list[ImageEntry]:
    """The images of an opened zip, every member checked (see the module docstring); nothing decompressed."""
    infos = zf.infolist()
    if len(infos) > MAX_MEMBERS:
        raise DataError(f"{name}: holds {len(infos):,} members; at most {MAX_MEMBERS:,} are read.")
    seen: set[str] = set()
    images, paths = [], []
    for info in infos:
        filename = info.filename
        if (filename.startswith("/") or "\\" in filename or len(filename) > 1024
                or any(_bad_component(p) for p in filename.rstrip("/").split("/"))):
            raise DataError(f"{name}: holds a member named {filename[:120]!r}; absolute paths, '..', backslashes, "
                            "drive letters and control characters are refused.")
        if filename in seen:
            raise DataError(f"{name}: holds two members named {filename[:120]!r}; zip readers disagree on which "
                            "they read, so it was not opened.")
        seen.add(filename)
        if stat.S_ISLNK(info.external_attr >> 16):
            raise DataError(f"{name}: {filename[:120]!r} is a symbolic link; links are refused.")
        if info.is_dir():
            continue
        parts = filename.split("/")
        if _skipped(parts):
            continue
        _check_image_name(filename, name)
        if info.flag_bits & 0x1:
            raise DataError(f"{name}: {filename[:120]!r} is encrypted; zip the images without a password.")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise DataError(f"{name}: {filename[:120]!r} uses zip compression method {info.compress_type}; only "
                            "the standard methods (stored, deflate) are read.")
        if info.compress_type == zipfile.ZIP_STORED and info.file_size != info.compress_size:
            raise DataError(f"{name}: {filename[:120]!r} declares a size that differs from what it holds; the zip "
                            "is damaged or forged.")
        if info.file_size > MAX_IMAGE_FILE_BYTES:
            raise DataError(f"{name}: {filename[:120]!r} declares {human_bytes(info.file_size)}; one image file "
                            f"may be at most {human_bytes(MAX_IMAGE_FILE_BYTES)}.")
        if info.file_size > (1 << 16) and info.file_size > MAX_RATIO * max(info.compress_size, 1):
            raise DataError(f"{name}: {filename[:120]!r} expands {info.file_size / max(info.compress_size, 1):,.0f}"
                            f" times ({human_bytes(info.compress_size)} to {human_bytes(info.file_size)}); PNG and "
                            "JPEG files hardly compress, so this is a zip bomb and the file was not opened.")
        paths.append(parts)
        images.append(info)
        if len(images) > MAX_IMAGES:
            raise DataError(f"{name}: holds more than {MAX_IMAGES:,} images; at most {MAX_IMAGES:,} are read.")
    if not images:
        raise DataError(f"{name}: holds no images; the dataset must hold {_LAYOUT}.")
    total = sum(i.file_size for i in images)
    if total > max_file_bytes():
        raise DataError(too_large(f"{name}: its images, unzipped,", total))
    classes = _classes_from_paths(paths, name)
    return [ImageEntry(c, i.filename, i.file_size, lambda i=i: zf.open(i)) for c, i in zip(classes, images,
                                                                                          strict=True)]


def _open_regular(path: str, limit: int) -> io.BufferedIOBase:
    """``path`` opened without following a symbolic link or blocking on a FIFO, and refused unless it is a
    regular file of at most ``limit`` bytes (checked on the opened file, so a file swapped after listing is
    checked too)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size > limit:
        os.close(fd)
        raise DataError(f"{path[-160:]!r} changed while it was read (no longer a regular file within its size).")
    return os.fdopen(fd, "rb")


def folder_entries(root: str | os.PathLike, name: str) -> list[ImageEntry]:
    """The images of a server-side folder ``root/class/image``: ``root`` must be a directory and not a link;
    every entry is listed without following links (links, special files and deeper folders are refused) and
    counted against ``MAX_MEMBERS`` while listed."""
    root = Path(root)
    if root.is_symlink() or not root.is_dir():
        raise DataError(f"{name}: {'is a symbolic link' if root.is_symlink() else 'is not a directory'}; give the "
                        f"path of a folder that holds {_LAYOUT}.")
    seen = 0
    entries: list[ImageEntry] = []

    def listed(folder: Path) -> list[os.DirEntry]:
        nonlocal seen
        out = []
        with os.scandir(folder) as it:
            for entry in it:
                seen += 1
                if seen > MAX_MEMBERS:
                    raise DataError(f"{name}: holds more than {MAX_MEMBERS:,} entries; at most {MAX_MEMBERS:,} "
                                    "are read.")
                if entry.name.startswith(".") or entry.name.lower() in _SKIPPED_NAMES:
                    continue
                if entry.is_symlink():
                    where = os.path.relpath(entry.path, root)
                    raise DataError(f"{name}: {where[:120]!r} is a symbolic link; links are refused.")
                out.append(entry)
        return sorted(out, key=lambda e: e.name)

    for top in listed(root):
        if not top.is_dir(follow_symlinks=False):
            raise DataError(f"{name}: {top.name[:120]!r} is not inside a class folder; the folder must hold "
                            f"{_LAYOUT}.")
        for entry in listed(Path(top.path)):
            where = f"{top.name}/{entry.name}"
            if entry.is_dir(follow_symlinks=False):
                raise DataError(f"{name}: {where[:120]!r} is a folder inside a class folder; the folder must hold "
                                f"{_LAYOUT}, with no deeper folders.")
            info = entry.stat(follow_symlinks=False)
            if not stat.S_ISREG(info.st_mode):
                raise DataError(f"{name}: {where[:120]!r} is not a regular file (a pipe, socket or device).")
            _check_image_name(where, name)
            if info.st_size > MAX_IMAGE_FILE_BYTES:
                raise DataError(f"{name}: {where[:120]!r} is {human_bytes(info.st_size)}; one image file may be at "
                                f"most {human_bytes(MAX_IMAGE_FILE_BYTES)}.")
            entries.append(ImageEntry(top.name, where, info.st_size,
                                      lambda p=entry.path: _open_regular(p, MAX_IMAGE_FILE_BYTES)))
            if len(entries) > MAX_IMAGES:
                raise DataError(f"{name}: holds more than {MAX_IMAGES:,} images; at most {MAX_IMAGES:,} are read.")
        if not any(e.class_name == top.name for e in entries):
            raise DataError(f"{name}: the class folder {top.name[:120]!r} holds no images; every class needs at "
                            "least one (an empty class would shift the numbers of the classes after it).")
    if not entries:
        raise DataError(f"{name}: holds no images; the folder must hold {_LAYOUT}.")
    total = sum(e.size for e in entries)
    if total > max_file_bytes():
        raise DataError(too_large(f"{name}: its image files", total))
    return entries


def _open_image(entry: ImageEntry, f, name: str) -> Image.Image:
    """The image's header, read by Pillow restricted to ``FORMATS``; Pillow's own decompression-bomb check (twice
    ``Image.MAX_IMAGE_PIXELS``) and text-chunk limits stay in force, below them ``MAX_IMAGE_PIXELS`` applies."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own, lower limit applies
            return Image.open(f, formats=FORMATS)
    except Image.DecompressionBombError as e:
        raise DataError(f"{name}: {entry.path[:120]!r} declares far more than {MAX_IMAGE_PIXELS:,} pixels (more "
                        "than Pillow's decompression-bomb limit); it was not decoded.") from e
    except UnidentifiedImageError as e:
        raise DataError(f"{name}: {entry.path[:120]!r} is not a PNG or JPEG image (its contents are something "
                        "else).") from e
    except (SyntaxError, ValueError) as e:
        raise DataError(f"{name}: {entry.path[:120]!r} is a damaged or malformed image "
                        f"({type(e).__name__}: {str(e)[:160]}).") from e


def header_sizes(entries: list[ImageEntry], name: str) -> list[tuple[int, int]]:
    """(width, height) of every image from its header alone, each refused above ``MAX_IMAGE_PIXELS``, all above
    ``MAX_TOTAL_PIXELS``."""
    sizes, total = [], 0
    for entry in entries:
        with _errors(name, entry), entry.open() as f, _open_image(entry, f, name) as img:
            width, height = img.size
        if width < 1 or height < 1 or width * height > MAX_IMAGE_PIXELS:
            raise DataError(f"{name}: {entry.path[:120]!r} declares {width:,} x {height:,} pixels; one image may "
                            f"have at most {MAX_IMAGE_PIXELS:,} pixels. It was not decoded.")
        total += width * height
        if total > MAX_TOTAL_PIXELS:
            raise DataError(f"{name}: its images declare more than {MAX_TOTAL_PIXELS:,} pixels in all, more than "
                            "this server decodes for one dataset; make the images smaller or fewer.")
        sizes.append((width, height))
    return sizes


@contextmanager
def _errors(name: str, entry: ImageEntry):
    """Damaged zips, CRC errors, truncated or malformed images, memory: one DataError naming the file."""
    where = f"{name}: {entry.path[:120]!r}"
    try:
        yield
    except DataError:
        raise
    except MemoryError as e:
        raise DataError(f"{where}: this server does not have the memory to decode it.") from e
    except (*_ZIP_ERRORS, SyntaxError, Image.DecompressionBombError) as e:
        raise DataError(f"{where} cannot be read: the file is damaged or truncated "
                        f"({type(e).__name__}: {str(e)[:160]}).") from e


def decode_into(entry: ImageEntry, header: tuple[int, int], out: torch.Tensor, name: str, size: int,
                resize_to: int, mean: tuple[float, ...], std: tuple[float, ...], interpolation: str) -> None:
    """One image decoded (a JPEG at the smallest DCT scale still at least its resized size), converted to RGB or
    grey levels, given the evaluation view and normalised into ``out`` (C, size, size)."""
    mode = "RGB" if len(mean) == 3 else "L"
    with _errors(name, entry):
        with entry.open() as f:
            raw = f.read(MAX_IMAGE_FILE_BYTES + 1)
        if len(raw) > MAX_IMAGE_FILE_BYTES:
            raise DataError(f"{name}: {entry.path[:120]!r} is larger than its declared size.")
        with _open_image(entry, io.BytesIO(raw), name) as img:
            if img.size != header:
                raise DataError(f"{name}: {entry.path[:120]!r} changed between reading its header and decoding.")
            if img.format == "JPEG":
                img.draft(mode, resized_shorter_side(*img.size, resize_to))
            img.load()
            picture = img.convert(mode)
        normalised(eval_view(picture, size, resize_to, interpolation), mean, std, out=out)


def image_splits(entries: list[ImageEntry], name: str, size: int = 224, resize_to: int | None = None,
                 mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD, seed: int = 0,
                 calib_fraction: float = 0.2, max_calib: int = 512, interpolation: str = "bilinear"):
    """Labelled ``DataSplits`` of checked ``entries``: the output's memory and the headers checked
    (``header_sizes``), then each image decoded into its row of one (N, C, size, size) float32 tensor,
    C = len(mean) (3: RGB, 1: grey levels). A seeded calibration split of ``calib_fraction`` of each class (at
    most ``max_calib``), the rest for evaluation, both views of that tensor; train is the calibration split."""
    if len(mean) not in (1, 3) or len(std) != len(mean):
        raise DataError(f"mean and std must both have 3 values (RGB) or 1 (grey levels); got {mean} and {std}.")
    if len(entries) < 2:
        raise DataError(f"{name}: at least 2 images are needed (one to calibrate, one to evaluate).")
    resize_to = resize_to if resize_to is not None else int(round(size * 256 / 224))
    if resize_to < size:
        raise DataError(f"resize_to ({resize_to}) must be at least the image size ({size}).")
    check_memory(f"{name}: {len(entries):,} images of {size} x {size}", 4 * len(mean) * size * size * len(entries))
    sizes = header_sizes(entries, name)
    class_names = tuple(sorted({e.class_name for e in entries}))
    index = {c: i for i, c in enumerate(class_names)}
    y = np.array([index[e.class_name] for e in entries], dtype=np.int64)
    cal_idx, ev_idx = calibration_indices(y, calib_fraction, max_calib, seed)
    order = np.concatenate([cal_idx, ev_idx])
    try:
        x = torch.empty((len(entries), len(mean), size, size), dtype=torch.float32)
    except RuntimeError as e:
        raise DataError(f"{name}: this server does not have the memory for {len(entries):,} images.") from e
    for row, k in enumerate(order):
        decode_into(entries[k], sizes[k], x[row], name, size, resize_to, tuple(mean), tuple(std), interpolation)
    yt = torch.from_numpy(y[order])
    n_cal = len(cal_idx)
    calib = Split(x[:n_cal], yt[:n_cal])  # views of the one buffer
    note = (f"{len(entries):,} images in {len(class_names)} classes from {name}; classes numbered in the sorted "
            "order of the folder names (as torchvision's ImageFolder does).")
    return DataSplits(name, calib, calib, Split(x[n_cal:], yt[n_cal:]), len(class_names), labelled=True,
                       class_names=class_names, note=note)


def load_image_folder_zip(data: bytes, name: str = "images.zip", **options):
    """Labelled ``DataSplits`` of a zipped folder of images, one class per subfolder (see the module docstring;
    ``options`` as for ``image_splits``: size, resize_to, mean, std, seed, calib_fraction, max_calib,
    interpolation). Nothing but ``DataError`` leaves this function."""
    if not bytes(data[:2]) == b"PK":
        raise DataError(f"{name}: not a zip archive; zip the folder of class folders and upload the .zip file.")
    if len(data) > max_file_bytes():
        raise DataError(too_large(f"{name}", len(data)))
    # zipfile parses every central-directory entry before it can be asked how many there are: count their
    # signatures first, an upper bound on their number
    if data.count(b"PK\x01\x02") > MAX_MEMBERS:
        raise DataError(f"{name}: holds more than {MAX_MEMBERS:,} members; at most {MAX_MEMBERS:,} are read.")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            return image_splits(zip_entries(zf, name), name, **options)
    except DataError:
        raise
    except MemoryError as e:
        raise DataError(f"{name}: this server does not have the memory to load this dataset.") from e
    except _ZIP_ERRORS as e:
        raise DataError(f"{name}: not a readable zip archive; it is damaged or truncated "
                        f"({type(e).__name__}: {str(e)[:200]}).") from e
    except Exception as e:  # a last net: nothing but DataError leaves this function
        raise DataError(f"{name}: not a readable image folder ({type(e).__name__}: {str(e)[:200]}).") from e


def load_image_folder(path: str | os.PathLike, within: str | os.PathLike | None = None, **options):
    """Labelled ``DataSplits`` of a folder on the server, ``path/class/image`` (see ``folder_entries`` and the
    module docstring; ``options`` as for ``image_splits``). ``within``: when given, ``path`` must lie inside that
    folder once resolved (what an app that lets people name server folders should pass). Nothing but
    ``DataError`` leaves this function."""
    name = str(path)
    try:
        if within is not None:
            base = Path(within).resolve()
            if not Path(path).resolve().is_relative_to(base):
                raise DataError(f"{name}: only folders inside {str(base)!r} can be read on this server.")
        return image_splits(folder_entries(path, name), name, **options)
    except DataError:
        raise
    except MemoryError as e:
        raise DataError(f"{name}: this server does not have the memory to load this dataset.") from e
    except OSError as e:
        raise DataError(f"{name}: cannot be read ({type(e).__name__}: {str(e)[:200]}).") from e
    except Exception as e:  # a last net: nothing but DataError leaves this function
        raise DataError(f"{name}: not a readable image folder ({type(e).__name__}: {str(e)[:200]}).") from e


__all__ = ["FORMATS", "IMAGE_SUFFIXES", "MAX_IMAGES", "MAX_IMAGE_FILE_BYTES", "MAX_IMAGE_PIXELS", "MAX_MEMBERS",
           "MAX_RATIO", "MAX_TOTAL_PIXELS", "ImageEntry", "decode_into", "folder_entries", "header_sizes",
           "image_splits", "load_image_folder", "load_image_folder_zip", "zip_entries"]
