"""Command line of autosam.data: `python -m autosam.data datalist --layout sun-seg --root DIR --output FILE`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from fire.decorators import SetParseFns

from autosam.cli import run_fire
from autosam.data.datalist import build_datalist

__all__ = ["datalist", "main"]


# Fire would parse "0012" or "1_3" as numbers; paths, names and ids must stay the strings typed.
@SetParseFns(layout=str, root=str, output=str, image_dir=str, mask_dir=str, axcodes=str)
def datalist(
    layout: str,
    root: str,
    output: str,
    val_fraction: float = 0.2,
    seed: int = 0,
    skip_invalid: bool = False,
    check_sizes: bool = True,
    absolute_paths: bool = False,
    image_dir: str | None = None,
    mask_dir: str | None = None,
    slices: bool = True,
    axcodes: str = "RAS",
    slice_axis: int = 2,
    label_values: list[int] | int | None = None,
    allow_uneven_spacing: bool = False,
) -> None:
    """Write a Decathlon-style datalist JSON for the data set in ROOT.

    Args:
        layout: folder layout: flat, pranet, sun-seg, nifti or dicom.
        root: top folder of the data set.
        output: path of the JSON file to write.
        val_fraction: fraction of the cases (videos, volumes or pictures) that go to "validation".
        seed: seed of the case shuffle; the same seed gives the same split.
        skip_invalid: skip items with problems (with a warning, listed under "skipped") instead of stopping.
        check_sizes: compare image and mask sizes while building.
        absolute_paths: write absolute paths instead of paths relative to the output file's folder.
        image_dir: name of the image folder when it is not images/, Original/, ...
        mask_dir: name of the mask folder when it is not masks/, GT/, ...
        slices: (nifti, dicom) one item per slice, with slice_index and foreground; False lists whole volumes.
        axcodes: (nifti, dicom) orientation the slice indices refer to; use the same in the transforms.
        slice_axis: (nifti, dicom) spatial axis (0, 1, 2) of the oriented volume across which slices are taken.
        label_values: (nifti, dicom) label ids that count as foreground for the foreground flag, e.g. 5 or [1,2].
        allow_uneven_spacing: (dicom) list series with a missing slice instead of reporting them.
    """
    output_path = Path(output).expanduser().resolve()
    result = build_datalist(
        layout,
        root,
        val_fraction=val_fraction,
        seed=seed,
        skip_invalid=skip_invalid,
        check_sizes=check_sizes,
        image_dir=image_dir,
        mask_dir=mask_dir,
        relative_to=None if absolute_paths else output_path.parent,
        slices=slices,
        axcodes=axcodes,
        slice_axis=slice_axis,
        label_values=None if label_values is None else [int(v) for v in np.ravel(label_values)],
        allow_uneven_spacing=allow_uneven_spacing,
    )
    output_path.parent.mkdir(parents=True, exist_ok=True)
    output_path.write_text(json.dumps(result, indent=2) + "\n")

    counts = {key: len(result[key]) for key in ("training", "validation", "test")}
    cases = {key: len({str(item["case"]) for item in result[key]}) for key in counts}
    print(f"{'split':<12}{'items':>8}{'cases':>8}")
    for key in counts:
        print(f"{key:<12}{counts[key]:>8}{cases[key]:>8}")
    if result.get("skipped"):
        print(f"skipped {len(result['skipped'])} item(s); see 'skipped' in {output_path}")
    print(f"wrote {output_path}")


def main() -> None:
    """Entry point of `autosam-datalist` and `python -m autosam.data`."""
    run_fire({"datalist": datalist}, name="python -m autosam.data")


if __name__ == "__main__":
    main()
