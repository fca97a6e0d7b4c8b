"""Reading and writing annotated image folders.

An annotated dataset is a folder with ``images/`` and ``masks/`` whose files
are paired by file stem::

    my_dataset/
        images/a.png   images/b.tif ...
        masks/a.tif    masks/b.png  ...

Images are PNG or TIFF, 8- or 16-bit, grayscale, RGB or multichannel; masks
are integer instance label images (0 = background). Every problem found in a
folder is reported at once, naming the file, before anything is returned.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import tifffile
from skimage.io import imread, imsave
from skimage.segmentation import relabel_sequential

IMAGE_SUFFIXES = (".png", ".tif", ".tiff")
IMAGE_DTYPES = (np.uint8, np.uint16)


class DatasetError(ValueError):
    """An annotated dataset cannot be used; the message lists every problem found."""


@dataclass(frozen=True)
class AnnotatedImage:
    """One image with its instance labels.

    Attributes
    ----------
    name
        File stem shared by the image and its mask.
    image
        ``(H, W, C)`` uint8 or uint16 array, ``C >= 1``.
    labels
        ``(H, W)`` int32 instance labels, 0 = background, ids ``1..N`` sequential.
    """

    name: str
    image: np.ndarray
    labels: np.ndarray


def read_image(path: str | os.PathLike) -> np.ndarray:
    """Read a microscopy image as ``(H, W, C)`` uint8/uint16.

    TIFF files stored channel-first (``(C, H, W)`` with ``C <= 8`` and ``C``
    the smallest axis) are moved to channel-last. An alpha channel of an RGBA
    PNG is dropped.

    Raises
    ------
    DatasetError
        When the file cannot be read, is not 2-D (+channels) or has another dtype.
    """
    path = Path(path)
    array = _read_array(path)
    if array.ndim == 2:
        array = array[..., None]
    elif array.ndim == 3:
        if path.suffix.lower() in (".tif", ".tiff") and array.shape[0] <= 8 and array.shape[0] < min(array.shape[1:]):
            array = np.moveaxis(array, 0, -1)
        if path.suffix.lower() == ".png" and array.shape[-1] == 4:
            array = array[..., :3]
    else:
        raise DatasetError(f"{path}: expected a 2-D image with optional channels, got an array of shape {array.shape}")
    if array.dtype not in IMAGE_DTYPES:
        raise DatasetError(f"{path}: image dtype {array.dtype} is not supported (use 8- or 16-bit unsigned integers)")
    return np.ascontiguousarray(array)


def read_labels(path: str | os.PathLike) -> np.ndarray:
    """Read an instance label image and relabel it sequentially.

    Returns
    -------
    np.ndarray
        ``(H, W)`` int32, 0 = background, ids ``1..N``.

    Raises
    ------
    DatasetError
        When the file cannot be read, is not 2-D, holds floats or negative values.
    """
    path = Path(path)
    array = _read_array(path)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 2:
        raise DatasetError(f"{path}: a mask must be a 2-D label image, got shape {array.shape}")
    return validate_labels(array, str(path))


def validate_labels(array: np.ndarray, name: str) -> np.ndarray:
    """Check an instance label array and relabel it sequentially.

    Parameters
    ----------
    array
        ``(H, W)`` integer labels.
    name
        What to call the array in error messages (a file path, a parameter).

    Returns
    -------
    np.ndarray
        ``(H, W)`` int32 with ids ``1..N``.
    """
    if not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
        raise DatasetError(f"{name}: labels must be integers, got dtype {array.dtype}")
    if array.size and array.min() < 0:
        raise DatasetError(f"{name}: labels must be >= 0 (0 = background), found {array.min()}")
    if array.size and array.max() > np.iinfo(np.int32).max:
        raise DatasetError(f"{name}: label ids exceed the int32 range")
    relabelled, _, _ = relabel_sequential(array.astype(np.int32))
    return relabelled.astype(np.int32, copy=False)


def read_dataset(folder: str | os.PathLike) -> list[AnnotatedImage]:
    """Read every (image, mask) pair of an annotated folder, sorted by name.

    Raises
    ------
    DatasetError
        Listing every problem: missing folders, unpaired files, unreadable
        files, shape mismatches, bad label values, or no pairs at all.
    """
    folder = Path(folder)
    image_dir, mask_dir = folder / "images", folder / "masks"
    missing = [str(d) for d in (image_dir, mask_dir) if not d.is_dir()]
    if missing:
        raise DatasetError(f"dataset {folder}: missing folder(s) {', '.join(missing)} (expected images/ and masks/)")
    images, image_problems = _files_by_stem(image_dir)
    masks, mask_problems = _files_by_stem(mask_dir)
    problems = image_problems + mask_problems
    problems += [f"{images[s]}: image has no mask in {mask_dir}" for s in sorted(images.keys() - masks.keys())]
    problems += [f"{masks[s]}: mask has no image in {image_dir}" for s in sorted(masks.keys() - images.keys())]
    samples = []
    for stem in sorted(images.keys() & masks.keys()):
        try:
            image = read_image(images[stem])
            labels = read_labels(masks[stem])
        except DatasetError as error:
            problems.append(str(error))
            continue
        if image.shape[:2] != labels.shape:
            problems.append(f"{masks[stem]}: mask shape {labels.shape} does not match image shape "
                            f"{image.shape[:2]} of {images[stem]}")
            continue
        samples.append(AnnotatedImage(stem, image, labels))
    channel_counts = {s.image.shape[2] for s in samples}
    if len(channel_counts) > 1:
        problems.append(f"dataset {folder}: images have different channel counts {sorted(channel_counts)}")
    if problems:
        raise DatasetError(f"dataset {folder} has {len(problems)} problem(s):\n  " + "\n  ".join(problems))
    if not samples:
        raise DatasetError(f"dataset {folder} is empty: no image/mask pairs ({', '.join(IMAGE_SUFFIXES)}) found")
    return samples


def write_dataset(folder: str | os.PathLike, samples: Sequence[AnnotatedImage]) -> Path:
    """Write samples as an annotated folder, atomically.

    Images with 1 or 3 channels go to PNG, others to TIFF; masks to
    zlib-compressed TIFF (uint16 when the ids fit, else int32). The folder is
    assembled beside its destination and moved into place at the end, so a
    crash never leaves a half-written dataset; an existing folder is replaced.

    Returns
    -------
    Path
        The written folder.
    """
    folder = Path(folder)
    if not samples:
        raise DatasetError(f"write_dataset {folder}: no samples to write")
    with staged_directory(folder) as staging:
        (staging / "images").mkdir()
        (staging / "masks").mkdir()
        for sample in samples:
            _write_image(staging / "images", sample.name, sample.image)
            labels = validate_labels(sample.labels, f"sample {sample.name}")
            mask_dtype = np.uint16 if labels.max(initial=0) <= np.iinfo(np.uint16).max else np.int32
            tifffile.imwrite(staging / "masks" / f"{sample.name}.tif", labels.astype(mask_dtype), compression="zlib")
    return folder


@contextmanager
def staged_directory(target: str | os.PathLike, create: bool = True) -> Iterator[Path]:
    """A staging folder beside ``target`` that replaces ``target`` when the ``with`` block succeeds.

    Every folder cellsynth writes goes through here: an exception (or a crash) leaves ``target`` as
    it was and removes the staging folder. ``create=False`` yields the path without making the folder,
    for writers that create it themselves (StarDist).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    if create:
        staging.mkdir()
    try:
        yield staging
        replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_directory(source: Path, destination: Path) -> None:
    """Move the finished folder ``source`` to ``destination``, replacing it.

    The old folder is renamed aside first, so ``destination`` is always either
    the old or the new complete folder.
    """
    backup = None
    if destination.exists():
        backup = destination.with_name(f".{destination.name}.old-{os.getpid()}")
        os.replace(destination, backup)
    os.replace(source, destination)
    if backup is not None:
        shutil.rmtree(backup, ignore_errors=True)


def write_atomically(path: Path, write: Callable[[BinaryIO], object], durable: bool = False) -> None:
    """Call ``write`` on a temporary file beside ``path``, then rename it into place.

    A crash leaves the old file or the new one, never a torn one. ``durable``
    also flushes the data to disk before the rename (checkpoints). The file gets the permissions a plain
    ``open`` would give it (``mkstemp`` makes it readable by its owner only).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, staging = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle, 0o666 & ~_umask())
        with os.fdopen(handle, "wb") as stream:
            write(stream)
            if durable:
                stream.flush()
                os.fsync(stream.fileno())
        os.replace(staging, path)
    except BaseException:
        Path(staging).unlink(missing_ok=True)
        raise


def _umask() -> int:
    """The process's file-creation mask (reading it means setting it, so it is set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _write_image(directory: Path, stem: str, image: np.ndarray) -> None:
    if image.dtype not in IMAGE_DTYPES:
        raise DatasetError(f"sample {stem}: image dtype {image.dtype} is not supported (use uint8 or uint16)")
    image = image if image.ndim == 3 else image[..., None]
    if image.shape[2] in (1, 3):
        imsave(directory / f"{stem}.png", image[..., 0] if image.shape[2] == 1 else image, check_contrast=False)
    else:
        tifffile.imwrite(directory / f"{stem}.tif", image, compression="zlib")


def _read_array(path: Path) -> np.ndarray:
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            return tifffile.imread(path)
        return np.asarray(imread(path))
    except Exception as error:  # any decoder failure means the same thing to the user
        raise DatasetError(f"{path}: cannot be read as an image ({type(error).__name__}: {error})") from error


def _files_by_stem(directory: Path) -> tuple[dict[str, Path], list[str]]:
    """Image files of a folder keyed by stem, and a problem line per clashing stem."""
    files: dict[str, Path] = {}
    clashes: list[str] = []
    for path in sorted(_image_files(directory.iterdir())):
        if path.stem in files:
            clashes.append(f"{path}: another file with stem '{path.stem}' exists ({files[path.stem].name})")
            continue
        files[path.stem] = path
    return files, clashes


def _image_files(paths: Iterable[Path]) -> Iterable[Path]:
    return (p for p in paths if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith("."))
