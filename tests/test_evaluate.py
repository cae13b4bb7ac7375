"""The evaluation CLI on a SUN-SEG-layout sequence with official values, on argument parsing and
on missing, unreadable and resized files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import fire
import numpy as np
import py_sod_metrics
import pytest
import torch

from autosam.evaluate import evaluate
from autosam.metrics import frame_values, prepare_uint8_frames, summarize

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sunseg_case(shared_cases) -> dict:
    root = shared_cases / "G2_sunseg_negatives"
    return {
        "pred_root": root / "Pred" / "MyModel" / "TestEasyDataset",
        "gt_root": root / "TestEasyDataset" / "GT",
        "expected": json.loads((root / "expected.json").read_text()),
        "cli_args": json.loads((root / "cli_args.json").read_text()),
    }


def test_sequence_mean_dice_uses_numeric_order(sunseg_case, tmp_path):
    results = evaluate(sunseg_case["pred_root"], sunseg_case["gt_root"], output=tmp_path / "results.json")
    sequence = sunseg_case["expected"]["sequence_level"]

    frames = list(results["per_frame"]["case1_1"])
    used = [int(name.rsplit("image", 1)[1]) for name in frames]
    assert used == sequence["vps_frames_used_numeric_sort_drop_first_last"]
    # The expected value averages per-frame means; the official order (per-threshold means first)
    # differs from it in the last bit.
    assert results["overall"]["meanDice"] == pytest.approx(
        sequence["vps_case_meanDice_numeric_sort"], abs=1e-12
    )
    assert results["per_case"]["case1_1"]["meanDice"] == results["overall"]["meanDice"]


def test_sequence_frames_match_official_values(sunseg_case, tmp_path):
    results = evaluate(
        sunseg_case["pred_root"],
        sunseg_case["gt_root"],
        output=tmp_path / "results.json",
        drop_first_last=False,
    )
    per_frame = results["per_frame"]["case1_1"]
    names = {
        "vps_meanDice_over_256_thresholds": "meanDice",
        "vps_meanSen": "meanSen",
        "vps_meanSpe": "meanSpe",
        "vps_Smeasure": "Smeasure",
        "vps_wFmeasure": "wFmeasure",
        "vps_adpEm": "adpEm",
    }
    for expected in sunseg_case["expected"]["per_frame"]:
        ours = per_frame[Path(expected["file"]).stem]
        for key, name in names.items():
            if key in expected:
                assert ours[name] == pytest.approx(expected[key], abs=1e-12), (expected["frame"], name)
        binary = expected["dice_binary"]
        if isinstance(binary, dict):
            # No ground-truth foreground: MONAI's ignore_empty gives NaN, which the means skip.
            assert np.isnan(ours["binaryDice"]), expected["frame"]
        else:
            assert ours["binaryDice"] == pytest.approx(binary, abs=1e-6), expected["frame"]


def test_outputs_written(sunseg_case, tmp_path):
    output = tmp_path / "out" / "run.json"
    results = evaluate(sunseg_case["pred_root"], sunseg_case["gt_root"], output=output)
    saved = json.loads(output.read_text())
    assert list(saved) == ["protocol", "overall", "per_case", "per_frame", "curves"]
    assert saved["overall"]["maxDice"] == pytest.approx(results["overall"]["maxDice"], abs=0)
    assert len(saved["curves"]["Dice"]) == 256
    assert saved["protocol"]["num_frames"] == 9
    # Frames without foreground have no HD95; JSON contains null instead of NaN.
    assert saved["per_frame"]["case1_1"]["case1_1-1_a1_ayy_image2"]["HD95"] is None
    csv_lines = (tmp_path / "out" / "run_per_case.csv").read_text().splitlines()
    assert csv_lines[0].startswith("case,frames,Smeasure,wFmeasure")
    assert csv_lines[1].startswith("case1_1,9,")
    for suffix in ("pr_curve", "fmeasure", "emeasure"):
        image = cv2.imread(str(tmp_path / "out" / f"run_{suffix}.png"))
        assert image is not None and image.shape[0] > 100, suffix
    assert "maxDice" in str(results)


def _copy_case(source: Path, target: Path, frames: int = 4) -> None:
    target.mkdir(parents=True)
    for path in sorted(source.iterdir())[:frames]:
        shutil.copy(path, target / path.name)


def _run_cli(arguments: list[str], cwd: Path) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, *arguments], cwd=cwd, env=environment, capture_output=True, text=True, timeout=300
    )


def _id_folders(sunseg_case, root: Path) -> list[str]:
    """Ground truth under root/0012 and predictions under root/1_3, one case per tricky id."""
    ids = sunseg_case["cli_args"]["argv_values"]
    for case_id in ids:
        _copy_case(sunseg_case["gt_root"] / "case1_1", root / "0012" / case_id)
        _copy_case(sunseg_case["pred_root"] / "case1_1", root / "1_3" / case_id)
    return ids


def test_cli_module_keeps_ids_as_strings(sunseg_case, tmp_path):
    ids = _id_folders(sunseg_case, tmp_path)
    arguments = ["1_3", "0012", "--cases", ",".join(ids), "--output", "1e3.json", "--clinical", "false"]
    completed = _run_cli(["-m", "autosam.evaluate", *arguments], tmp_path)
    assert completed.returncode == 0, completed.stderr
    results = json.loads((tmp_path / "1e3.json").read_text())
    # fire would turn 1_3 into 13 and 12345 into an int; every id and path must stay text.
    assert list(results["per_case"]) == sunseg_case["cli_args"]["tool_must_use"]
    assert results["protocol"]["pred_root"] == "1_3"
    assert results["protocol"]["gt_root"] == "0012"
    assert "Smeasure" in completed.stdout


def test_python_fire_entry_keeps_ids_as_strings(sunseg_case, tmp_path, monkeypatch, capsys):
    import autosam.evaluate

    ids = _id_folders(sunseg_case, tmp_path)
    monkeypatch.chdir(tmp_path)
    # What `python -m fire autosam.evaluate evaluate ...` runs.
    fire.Fire(
        autosam.evaluate,
        command=[
            "evaluate",
            "1_3",
            "0012",
            "--cases",
            ",".join(ids[:3]),
            "--output=12345.json",
            "--allow_missing",
        ],
    )
    results = json.loads((tmp_path / "12345.json").read_text())
    assert list(results["per_case"]) == sunseg_case["cli_args"]["tool_must_use"][:3]
    assert "paper columns" in capsys.readouterr().out


def test_missing_predictions_are_listed(sunseg_case, tmp_path):
    gt_root = tmp_path / "gt"
    pred_root = tmp_path / "pred"
    _copy_case(sunseg_case["gt_root"] / "case1_1", gt_root / "case1_1", frames=6)
    _copy_case(sunseg_case["pred_root"] / "case1_1", pred_root / "case1_1", frames=6)
    # Frames 1, 10, 11, 2, 3, 4 by name; in numeric order 2, 3, 4 and 10 are scored.
    removed = pred_root / "case1_1" / "case1_1-1_a1_ayy_image3.png"
    removed.unlink()

    with pytest.raises(FileNotFoundError, match=removed.name) as error:
        evaluate(pred_root, gt_root, output=tmp_path / "r.json")
    assert "--allow_missing" in str(error.value)

    results = evaluate(pred_root, gt_root, output=tmp_path / "r.json", allow_missing=True)
    assert results["protocol"]["missing_predictions"] == [f"case1_1/{removed.name}"]
    assert results["protocol"]["num_frames"] == 3


def test_unreadable_file_is_named(sunseg_case, tmp_path):
    gt_root = tmp_path / "gt"
    pred_root = tmp_path / "pred"
    _copy_case(sunseg_case["gt_root"] / "case1_1", gt_root / "case1_1")
    _copy_case(sunseg_case["pred_root"] / "case1_1", pred_root / "case1_1")
    broken = sorted((pred_root / "case1_1").iterdir())[1]
    broken.write_bytes(b"not a png")
    with pytest.raises(ValueError, match=broken.name):
        evaluate(pred_root, gt_root, output=tmp_path / "r.json")


def test_flat_layout_resizes_predictions(shared_data, tmp_path):
    gt_root = tmp_path / "gt"
    pred_root = tmp_path / "pred"
    gt_root.mkdir()
    pred_root.mkdir()
    masks = sorted((shared_data / "kvasir_seg" / "masks").iterdir())[:3]
    gts, preds = [], []
    for index, path in enumerate(masks):
        gt = cv2.resize(
            cv2.imread(str(path), cv2.IMREAD_GRAYSCALE), (300, 260), interpolation=cv2.INTER_NEAREST
        )
        small = cv2.resize(cv2.GaussianBlur(gt, (0, 0), 4), (176, 176))  # predicted at another size
        cv2.imwrite(str(gt_root / f"{index}.png"), gt)
        cv2.imwrite(str(pred_root / f"{index}.png"), small)
        gts.append(gt)
        preds.append(cv2.resize(small, (300, 260)))

    results = evaluate(pred_root, gt_root, layout="flat", output=tmp_path / "flat.json")
    assert results["per_case"] == {}
    assert not (tmp_path / "flat_per_case.csv").exists()
    frame_rows = (tmp_path / "flat_per_frame.csv").read_text().splitlines()
    assert frame_rows[0].startswith("frame,")
    assert [row.split(",")[0] for row in frame_rows[1:]] == ["0", "1", "2"]
    expected = summarize(
        frame_values(
            *prepare_uint8_frames(torch.from_numpy(np.stack(preds)), torch.from_numpy(np.stack(gts)))
        )
    )
    for name, value in expected.items():
        assert results["overall"][name] == pytest.approx(value, abs=1e-12), name

    smeasure = py_sod_metrics.Smeasure()
    for pred, gt in zip(preds, gts, strict=True):
        smeasure.step(pred=pred, gt=gt)
    assert results["overall"]["Smeasure"] == pytest.approx(smeasure.get_results()["sm"], abs=1e-6)


def test_cli_bad_input_prints_one_error(sunseg_case, tmp_path):
    missing = _run_cli(["-m", "autosam.evaluate", "no_such_predictions", "no_such_truth"], tmp_path)
    assert missing.returncode == 2
    assert "Traceback" not in missing.stderr
    assert "error:" in missing.stderr
    assert "no_such" in missing.stderr

    flat_folder = tmp_path / "masks"
    _copy_case(sunseg_case["gt_root"] / "case1_1", flat_folder)
    wrong_layout = _run_cli(["-m", "autosam.evaluate", str(flat_folder), str(flat_folder)], tmp_path)
    assert wrong_layout.returncode == 2
    assert "--layout flat" in wrong_layout.stderr

    bad_datalist = _run_cli(
        ["-m", "autosam.data", "datalist", "--layout", "sunseg", "--root", str(tmp_path), "--output", "d.json"],
        tmp_path,
    )
    assert bad_datalist.returncode == 2
    assert "Traceback" not in bad_datalist.stderr
    assert "sunseg" in bad_datalist.stderr
    assert not (tmp_path / "d.json").exists()
