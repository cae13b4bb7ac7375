"""Build Decathlon-style datalists from the folder layouts that segmentation data sets are published in.

A datalist is `{"training": [...], "validation": [...], "test": [...]}`; every item has `image`,
`label` and `case` (a string). Training and validation are split by case, so all frames of one
video and all slices of one volume stay on one side, with a seeded shuffle of the sorted case
names: the same folder, fraction and seed always give the same split.
"""

from __future__ import annotations

import logging
import os
import random
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from autosam.data.errors import InvalidItemError, ItemProblems
from autosam.data.io import IMAGE_2D_SUFFIXES, image_2d_shape
from autosam.data.volume_datalist import dicom_layout, nifti_layout

__all__ = [
    "LAYOUTS",
    "build_datalist",
    "split_by_case",
    "natural_sort_key",
    "pair_folders",
    "ItemProblems",
]

logger = logging.getLogger(__name__)

IMAGE_DIR_NAMES = ("images", "image", "imgs", "img", "Original", "Frame", "Frames")
MASK_DIR_NAMES = ("masks", "mask", "labels", "labelcol", "Ground Truth", "GT", "gt")


def natural_sort_key(text: str) -> list[Any]:
    """Sort key that orders embedded numbers by value: 'image2' before 'image10'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", text)]


def _find_child(folder: Path, names: Sequence[str], explicit: str | None, role: str) -> Path:
    if explicit is not None:
        child = folder / explicit
        if not child.is_dir():
            raise InvalidItemError(f"{role} folder '{child}' not found")
        return child
    for name in names:
        if (folder / name).is_dir():
            return folder / name
    raise InvalidItemError(
        f"no {role} folder in '{folder}': expected one of {', '.join(names)}; "
        f"pass image_dir/mask_dir to name it"
    )


def _list_pictures(folder: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.name.startswith(".") or path.suffix.lower() not in IMAGE_2D_SUFFIXES:
            continue
        if path.stem in files:
            raise InvalidItemError(
                f"'{files[path.stem]}' and '{path}' share the stem '{path.stem}', so the mask pairing is "
                "ambiguous; remove or rename one of them"
            )
        files[path.stem] = path
    return files


def pair_folders(
    image_folder: Path,
    mask_folder: Path,
    problems: ItemProblems,
    *,
    check_sizes: bool = True,
) -> list[tuple[str, Path, Path]]:
    """Pair the pictures of two folders by file stem, in natural order: a list of (stem, image, mask).

    An image without a mask, a mask without an image and (with `check_sizes`) a mask whose size
    differs from its image's are reported to `problems`. The sizes come from the file headers.
    """
    images = _list_pictures(image_folder)
    masks = _list_pictures(mask_folder)
    if not images:
        raise InvalidItemError(
            f"image folder '{image_folder}' contains no pictures ({', '.join(IMAGE_2D_SUFFIXES)}); check --root"
        )
    for stem in sorted(set(masks) - set(images), key=natural_sort_key):
        problems.report(
            masks[stem], f"mask '{masks[stem]}' has no image with the stem '{stem}' in '{image_folder}'"
        )

    pairs = []
    for stem in sorted(images, key=natural_sort_key):
        image = images[stem]
        mask = masks.get(stem)
        if mask is None:
            problems.report(image, f"image '{image}' has no mask with the stem '{stem}' in '{mask_folder}'")
            continue
        if check_sizes and not _sizes_agree(image, mask, problems):
            continue
        pairs.append((stem, image, mask))
    return pairs


def _sizes_agree(image: Path, mask: Path, problems: ItemProblems) -> bool:
    try:
        image_size = image_2d_shape(image)
        mask_size = image_2d_shape(mask)
    except InvalidItemError as err:
        problems.report(image, str(err))
        return False
    if image_size != mask_size:
        problems.report(
            image,
            f"mask '{mask}' is {mask_size[1]}x{mask_size[0]} (W x H) but its image '{image}' is "
            f"{image_size[1]}x{image_size[0]}; pair each image with the mask made for it",
        )
        return False
    return True


def split_by_case(
    items: Sequence[dict[str, Any]], *, val_fraction: float = 0.2, seed: int = 0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split items into (training, validation) so that each case lies on one side only.

    The sorted case names are shuffled with `random.Random(seed)`, and the first
    round(`val_fraction` x number of cases) of them (at least one when `val_fraction` > 0 and
    there are two cases or more, never all) go to validation. Item order is kept on each side.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    cases = sorted({str(item["case"]) for item in items}, key=natural_sort_key)
    num_val = round(val_fraction * len(cases))
    if val_fraction > 0 and len(cases) >= 2:
        num_val = min(max(num_val, 1), len(cases) - 1)
    else:
        num_val = 0
    shuffled = list(cases)
    random.Random(seed).shuffle(shuffled)
    val_cases = set(shuffled[:num_val])
    training = [item for item in items if str(item["case"]) not in val_cases]
    validation = [item for item in items if str(item["case"]) in val_cases]
    return training, validation


def _flat_items(
    folder: Path,
    problems: ItemProblems,
    *,
    image_dir: str | None,
    mask_dir: str | None,
    check_sizes: bool,
    **_: Any,
) -> list[dict[str, Any]]:
    image_folder = _find_child(folder, IMAGE_DIR_NAMES, image_dir, "image")
    mask_folder = _find_child(folder, MASK_DIR_NAMES, mask_dir, "mask")
    pairs = pair_folders(image_folder, mask_folder, problems, check_sizes=check_sizes)
    return [{"image": str(image), "label": str(mask), "case": stem} for stem, image, mask in pairs]


def _flat_layout(root: Path, problems: ItemProblems, **options: Any) -> tuple[list[dict], list[dict]]:
    """`root/images/*` + `root/masks/*` paired by stem; every picture is its own case."""
    return _flat_items(root, problems, **options), []


def _pranet_layout(root: Path, problems: ItemProblems, **options: Any) -> tuple[list[dict], list[dict]]:
    """PraNet split: `TrainDataset/{images,masks}` to split, `TestDataset/<set>/{images,masks}` to test."""
    train_folder = root / "TrainDataset"
    test_folder = root / "TestDataset"
    if not train_folder.is_dir() and not test_folder.is_dir():
        raise InvalidItemError(
            f"'{root}' has neither TrainDataset/ nor TestDataset/; is this the PraNet layout?"
        )

    pool = _flat_items(train_folder, problems, **options) if train_folder.is_dir() else []
    test = []
    if test_folder.is_dir():
        for set_folder in sorted(p for p in test_folder.iterdir() if p.is_dir()):
            for item in _flat_items(set_folder, problems, **options):
                item["dataset"] = set_folder.name
                item["case"] = f"{set_folder.name}/{item['case']}"
                test.append(item)
    return pool, test


def _sun_seg_split_folders(root: Path) -> list[Path]:
    """Folders under `root` (itself included, up to three levels down) that hold `Frame/` and `GT/`."""
    found = []
    for depth_glob in ("", "*", "*/*", "*/*/*"):
        candidates = [root] if not depth_glob else sorted(root.glob(depth_glob))
        for folder in candidates:
            if folder.is_dir() and (folder / "Frame").is_dir() and (folder / "GT").is_dir():
                found.append(folder)
    return found


def _sun_seg_layout(
    root: Path, problems: ItemProblems, *, check_sizes: bool, **_: Any
) -> tuple[list[dict], list[dict]]:
    """SUN-SEG video layout: `<split>/Frame/<case>/*.jpg` + `<split>/GT/<case>/*.png`.

    A split whose path contains "test" (TestEasyDataset/Seen, ...) goes to "test". The others (the
    root itself, TrainDataset, ...) are split by case into training and validation.
    """
    split_folders = _sun_seg_split_folders(root)
    if not split_folders:
        raise InvalidItemError(
            f"no Frame/ and GT/ folders found in '{root}' or up to three levels below it; "
            "expected <split>/Frame/<case>/* and <split>/GT/<case>/*"
        )
    pool, test = [], []
    for split_folder in split_folders:
        split = split_folder.relative_to(root).as_posix()
        case_folders = sorted(
            (p for p in (split_folder / "Frame").iterdir() if p.is_dir()),
            key=lambda p: natural_sort_key(p.name),
        )
        if not case_folders:
            raise InvalidItemError(f"'{split_folder / 'Frame'}' contains no case folders")
        items = []
        for case_folder in case_folders:
            gt_folder = split_folder / "GT" / case_folder.name
            if not gt_folder.is_dir():
                problems.report(
                    case_folder, f"case '{case_folder.name}' has frames but no mask folder '{gt_folder}'"
                )
                continue
            pairs = pair_folders(case_folder, gt_folder, problems, check_sizes=check_sizes)
            for frame_index, (stem, image, mask) in enumerate(pairs):
                item = {"image": str(image), "label": str(mask), "case": case_folder.name, "frame": stem}
                item["frame_index"] = frame_index
                if split != ".":
                    item["split"] = split
                items.append(item)
        is_test = "test" in split.lower()
        (test if is_test else pool).extend(items)
    return pool, test


LayoutBuilder = Callable[..., tuple[list[dict], list[dict]]]

LAYOUTS: dict[str, LayoutBuilder] = {
    "flat": _flat_layout,
    "pranet": _pranet_layout,
    "sun-seg": _sun_seg_layout,
    "nifti": nifti_layout,
    "dicom": dicom_layout,
}


def _relative_paths(items: Iterable[dict[str, Any]], base: Path) -> None:
    for item in items:
        for key in ("image", "label"):
            value = item.get(key)
            if isinstance(value, str):
                item[key] = os.path.relpath(value, base)
            elif isinstance(value, list):
                item[key] = [os.path.relpath(v, base) for v in value]


def build_datalist(
    layout: str,
    root: str | Path,
    *,
    val_fraction: float = 0.2,
    seed: int = 0,
    skip_invalid: bool = False,
    check_sizes: bool = True,
    image_dir: str | None = None,
    mask_dir: str | None = None,
    relative_to: str | Path | None = None,
    **layout_options: Any,
) -> dict[str, Any]:
    """Build a Decathlon-style datalist from the folder `root` in one of `LAYOUTS`.

    Args:
        layout: folder layout, one of `LAYOUTS` ("flat", "pranet", "sun-seg", ...).
        root: top folder of the data set.
        val_fraction: fraction of the cases (not items) that go to "validation".
        seed: seed of the case shuffle.
        skip_invalid: log and skip items with problems (listed under "skipped") instead of raising.
        check_sizes: compare image and mask sizes from the file headers while building.
        image_dir: name of the image folder when it is not one of the usual names.
        mask_dir: name of the mask folder when it is not one of the usual names.
        relative_to: write paths relative to this folder (MONAI's `load_decathlon_datalist`
            joins them to its `base_dir`, by default the datalist file's folder); None keeps absolute paths.
        layout_options: options of the layout's builder (see docs/data.md).

    Raises:
        InvalidItemError: naming the file and the problem, unless `skip_invalid` is set and the
            problem concerns one item only.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {', '.join(LAYOUTS)}, got {layout!r}")
    root = Path(root).expanduser().resolve()
    if not root.is_dir():
        raise InvalidItemError(f"data folder '{root}' not found; check --root")

    problems = ItemProblems(skip_invalid=skip_invalid)
    options = {"check_sizes": check_sizes, "image_dir": image_dir, "mask_dir": mask_dir, **layout_options}
    pool, test = LAYOUTS[layout](root, problems, **options)
    if not pool and not test:
        raise InvalidItemError(f"no usable image/label pairs found in '{root}' with layout '{layout}'")
    training, validation = split_by_case(pool, val_fraction=val_fraction, seed=seed)

    datalist: dict[str, Any] = {"training": training, "validation": validation, "test": test}
    if relative_to is not None:
        base = Path(relative_to).expanduser().resolve()
        for key in ("training", "validation", "test"):
            _relative_paths(datalist[key], base)
    if problems.skipped:
        logger.warning("skipped %d item(s) with problems in '%s'", len(problems.skipped), root)
        datalist["skipped"] = problems.skipped
    logger.info(
        "datalist of '%s' (%s): %d training, %d validation, %d test items",
        root,
        layout,
        len(training),
        len(validation),
        len(test),
    )
    return datalist
