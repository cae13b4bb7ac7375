"""SUN-SEG metrics against PySODMetrics (the official evaluator's code), a numpy transcription of
the official Dice / Sen curves, SciPy's distance transform and hand-computed edge cases."""

from __future__ import annotations

import warnings
from pathlib import Path

import cv2
import numpy as np
import py_sod_metrics
import pytest
import torch
from monai.data import MetaTensor
from scipy.ndimage import distance_transform_edt

from autosam.metrics import (
    EMeasure,
    FMeasure,
    MeanAbsoluteError,
    SMeasure,
    SunSegMetrics,
    ThresholdCurves,
    WeightedFMeasure,
    binarize,
    frame_values,
    prepare_uint8_frames,
    summarize,
    uint8_frame_values,
    unpack,
)
from autosam.metrics.curves import linspace_counts
from autosam.metrics.distance import (
    _squared_distance_brute_force,
    distance_to_foreground,
    nearest_foreground_offsets,
    squared_distance_to_foreground,
)
from autosam.metrics.protocol import DICE_THRESHOLDS

TOLERANCE = 1e-6


def _read_masks(shared_data: Path) -> list[np.ndarray]:
    """Real polyp masks: two Kvasir-SEG (one resized to the odd size 333 x 517), two CVC-ClinicDB."""
    kvasir = sorted((shared_data / "kvasir_seg" / "masks").iterdir())
    clinic = sorted((shared_data / "cvc_clinicdb" / "masks").iterdir())
    masks = [
        cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) for path in (kvasir[0], kvasir[7], clinic[0], clinic[5])
    ]
    masks[0] = cv2.resize(masks[0], (517, 333), interpolation=cv2.INTER_NEAREST)
    masks[1] = cv2.resize(masks[1], (352, 352), interpolation=cv2.INTER_NEAREST)
    return masks


def _perturbed_predictions(gt: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Soft 8-bit predictions: blurred, shifted, noisy, and predicted at half size then resized back."""
    height, width = gt.shape
    blurred = cv2.GaussianBlur(gt, (0, 0), 6)
    noisy = np.clip(cv2.GaussianBlur(gt, (0, 0), 2).astype(np.float64) + rng.normal(0, 25, gt.shape), 0, 255)
    small = cv2.resize(cv2.GaussianBlur(gt, (0, 0), 3), (width // 2 + 1, height // 2 + 1))
    return {
        "blur": blurred,
        "shift": np.roll(cv2.GaussianBlur(gt, (0, 0), 1.5), (9, -13), axis=(0, 1)),
        "noise": noisy.astype(np.uint8),
        # The official evaluator resizes a prediction of another size with cv2.resize (bilinear).
        "resized": cv2.resize(small, (width, height)),
    }


def pysod_metrics() -> dict[str, object]:
    """Fresh PySODMetrics evaluators of the suite, by our field names."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fmeasure announces its successor
        return {
            "Smeasure": py_sod_metrics.Smeasure(),
            "wFmeasure": py_sod_metrics.WeightedFmeasure(),
            "Em": py_sod_metrics.Emeasure(),
            "Fm": py_sod_metrics.Fmeasure(),
            "MAE": py_sod_metrics.MAE(),
        }


def _pysod_frame(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray | float]:
    """PySODMetrics' values for one 8-bit frame pair."""
    metrics = pysod_metrics()
    for metric in metrics.values():
        metric.step(pred=pred, gt=gt)
    em = metrics["Em"].get_results()["em"]
    fm = metrics["Fm"].get_results()
    return {
        "Smeasure": metrics["Smeasure"].get_results()["sm"],
        "wFmeasure": metrics["wFmeasure"].get_results()["wfm"],
        "MAE": metrics["MAE"].get_results()["mae"],
        "adpEm": em["adp"],
        "Em": em["curve"],
        "adpFm": fm["fm"]["adp"],
        "Fm": fm["fm"]["curve"],
        "Precision": fm["pr"]["p"],
        "Recall": fm["pr"]["r"],
    }


def _ours(pred: np.ndarray, gt: np.ndarray, path: str = "probability") -> dict[str, torch.Tensor]:
    """Our values for one 8-bit frame pair, by the per-pixel path or the 8-bit histogram path."""
    pred_levels = torch.from_numpy(pred)[None]
    gt_levels = torch.from_numpy(gt)[None]
    if path == "uint8":
        values = uint8_frame_values(pred_levels, gt_levels)
    else:
        values = frame_values(*prepare_uint8_frames(pred_levels, gt_levels))
    return {name: value[0] for name, value in unpack(values).items()}


def official_threshold_curves(pred: np.ndarray, gt: np.ndarray) -> dict[str, np.ndarray]:
    """Direct transcription of the official evaluator's per-threshold loop (Sen, Spe, Dice, IoU)."""
    gt = gt > 128
    pred = pred / 255
    if pred.max() != pred.min():
        pred = (pred - pred.min()) / (pred.max() - pred.min())
    curves = {name: np.zeros(256) for name in ("Sen", "Spe", "Dice", "IoU")}
    for j, threshold in enumerate(np.linspace(1, 0, 256)):
        label = np.zeros_like(gt)
        label[pred >= threshold] = 1
        num_rec = np.sum(label == 1)
        num_no_rec = np.sum(label == 0)
        num_and = np.sum((label == 1) & (gt == 1))
        num_obj = np.sum(gt)
        fn = num_obj - num_and
        fp = num_rec - num_and
        tn = num_no_rec - fn
        if num_and == 0:
            continue
        with np.errstate(invalid="ignore"):
            curves["Sen"][j] = num_and / num_obj
            curves["Spe"][j] = tn / (tn + fp)
            curves["Dice"][j] = 2 * num_and / (num_obj + num_rec)
            curves["IoU"][j] = num_and / (fn + num_rec)
    return curves


@pytest.fixture(scope="module")
def real_frames(shared_data) -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    frames = []
    for index, gt in enumerate(_read_masks(shared_data)):
        for kind, pred in _perturbed_predictions(gt, rng).items():
            frames.append((f"mask{index}-{kind}", pred, gt))
    return frames


@pytest.fixture(scope="module")
def pysod_results(real_frames) -> tuple[list[dict], dict[str, float]]:
    """PySODMetrics per frame, and its means over all frames (one run of each metric class)."""
    metrics = pysod_metrics()
    for _, pred, gt in real_frames:
        for metric in metrics.values():
            metric.step(pred=pred, gt=gt)
    em = metrics["Em"].get_results()["em"]
    fm = metrics["Fm"].get_results()["fm"]
    per_frame = [
        {
            "Smeasure": metrics["Smeasure"].sms[i],
            "wFmeasure": metrics["wFmeasure"].weighted_fms[i],
            "MAE": metrics["MAE"].maes[i],
            "adpEm": metrics["Em"].adaptive_ems[i],
            "Em": metrics["Em"].changeable_ems[i],
            "adpFm": metrics["Fm"].adaptive_fms[i],
            "Fm": metrics["Fm"].changeable_fms[i],
            "Precision": metrics["Fm"].precisions[i],
            "Recall": metrics["Fm"].recalls[i],
        }
        for i in range(len(real_frames))
    ]
    aggregated = {
        "Smeasure": metrics["Smeasure"].get_results()["sm"],
        "wFmeasure": metrics["wFmeasure"].get_results()["wfm"],
        "MAE": metrics["MAE"].get_results()["mae"],
        "adpEm": em["adp"],
        "meanEm": em["curve"].mean(),
        "maxEm": em["curve"].max(),
        "adpFm": fm["adp"],
        "meanFm": fm["curve"].mean(),
        "maxFm": fm["curve"].max(),
    }
    return per_frame, aggregated


@pytest.mark.parametrize("path", ["probability", "uint8"])
def test_suite_matches_pysodmetrics_per_frame(real_frames, pysod_results, path):
    for (name, pred, gt), expected in zip(real_frames, pysod_results[0], strict=True):
        ours = _ours(pred, gt, path)
        for metric, value in expected.items():
            difference = np.abs(ours[metric].numpy() - np.asarray(value)).max()
            assert difference <= TOLERANCE, f"{name} {metric}: |difference| {difference:.3g}"


def test_suite_matches_pysodmetrics_aggregated(real_frames, pysod_results):
    rows = [
        frame_values(*prepare_uint8_frames(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None]))
        for _, pred, gt in real_frames
    ]
    ours = summarize(torch.cat(rows))
    for metric, value in pysod_results[1].items():
        assert abs(ours[metric] - value) <= TOLERANCE, metric


def test_threshold_curves_match_official_loop(real_frames):
    # The loop costs about 0.1 s per frame, so a subset of the perturbations.
    for name, pred, gt in real_frames[::4]:
        expected = official_threshold_curves(pred, gt)
        for path in ("probability", "uint8"):
            ours = _ours(pred, gt, path)
            for metric, curve in expected.items():
                np.testing.assert_array_equal(ours[metric].numpy(), curve, err_msg=f"{name} {path} {metric}")


def test_uint8_path_matches_probability_path(real_frames):
    preds = torch.from_numpy(np.stack([pred for _, pred, gt in real_frames if gt.shape == (352, 352)]))
    gts = torch.from_numpy(np.stack([gt for _, pred, gt in real_frames if gt.shape == (352, 352)]))
    histogram_rows = uint8_frame_values(preds, gts)
    pixel_rows = frame_values(*prepare_uint8_frames(preds, gts))
    torch.testing.assert_close(histogram_rows, pixel_rows, atol=1e-12, rtol=0, equal_nan=True)


def test_linspace_counts_match_sorted_search():
    thresholds = DICE_THRESHOLDS
    values = np.concatenate(
        [
            thresholds,
            np.nextafter(thresholds, 2),
            np.nextafter(thresholds, -1),
            np.arange(256) / 255,
            [0.0, 1.0],
        ]
    )
    values = np.concatenate([values, np.random.default_rng(1).random(4000)]).clip(0, 1)
    gt = np.random.default_rng(2).random(values.size) < 0.4
    counts = linspace_counts(torch.from_numpy(values)[None], torch.from_numpy(gt)[None])
    expected_tp = [(values[gt] >= t).sum() for t in thresholds]
    expected_fp = [(values[~gt] >= t).sum() for t in thresholds]
    np.testing.assert_array_equal(counts.tp[0].numpy(), expected_tp)
    np.testing.assert_array_equal(counts.fp[0].numpy(), expected_fp)


def test_distance_backends_match_scipy(shared_data):
    masks = _read_masks(shared_data)
    for mask in masks:
        gt = mask > 128
        expected = distance_transform_edt(~gt)
        np.testing.assert_array_equal(distance_to_foreground(torch.from_numpy(gt)[None])[0].numpy(), expected)
    # The brute-force search (used on GPUs) on a crop, to keep the test fast.
    gt = masks[2] > 128
    rows, cols = np.nonzero(gt)
    top, left = max(rows.min() - 20, 0), max(cols.min() - 20, 0)
    crop = torch.from_numpy(gt[top : top + 90, left : left + 120].copy())[None]
    assert crop.any()
    assert not crop.all()
    brute = _squared_distance_brute_force(crop)
    torch.testing.assert_close(brute, squared_distance_to_foreground(crop), rtol=0, atol=0)


def test_nearest_foreground_follows_scipy_ties():
    rng = np.random.default_rng(3)
    gt = rng.random((4, 40, 50)) < 0.08
    checked = 0
    for frame in range(gt.shape[0]):
        distance, indices = distance_transform_edt(~gt[frame], return_indices=True)
        rows, cols = np.nonzero(~gt[frame] & (distance**2 <= 18))
        pixels = torch.from_numpy(np.stack([np.full_like(rows, frame), rows, cols], axis=1))
        offsets = nearest_foreground_offsets(torch.from_numpy(gt), pixels).numpy()
        np.testing.assert_array_equal(rows + offsets[:, 0], indices[0][rows, cols])
        np.testing.assert_array_equal(cols + offsets[:, 1], indices[1][rows, cols])
        checked += rows.size
    assert checked > 1000


def _synthetic_gt(height: int = 60, width: int = 80) -> np.ndarray:
    gt = np.zeros((height, width), np.uint8)
    gt[15:40, 20:55] = 255
    return gt


@pytest.mark.parametrize(
    "case",
    ["empty_prediction", "constant_prediction", "binary_prediction", "empty_gt", "full_gt"],
)
def test_edge_cases_match_pysodmetrics(case):
    rng = np.random.default_rng(4)
    gt = _synthetic_gt()
    soft = cv2.GaussianBlur(gt, (0, 0), 4)
    pred = {
        "empty_prediction": np.zeros_like(gt),
        "constant_prediction": np.full_like(gt, 128),
        "binary_prediction": np.roll(gt, 3, axis=1),
        "empty_gt": soft,
        "full_gt": soft,
    }[case]
    if case == "empty_gt":
        gt = np.zeros_like(gt)
    if case == "full_gt":
        gt = np.full_like(gt, 255)
        pred = np.clip(soft.astype(int) + rng.integers(0, 60, gt.shape), 0, 255).astype(np.uint8)
    expected = _pysod_frame(pred, gt)
    ours = _ours(pred, gt)
    for metric, value in expected.items():
        np.testing.assert_allclose(ours[metric].numpy(), value, atol=TOLERANCE, err_msg=f"{case} {metric}")
        histogram = _ours(pred, gt, "uint8")[metric].numpy()
        np.testing.assert_allclose(histogram, value, atol=TOLERANCE, err_msg=f"{case} uint8 {metric}")


def test_edge_case_values_by_hand():
    gt = np.zeros((50, 60), np.uint8)
    pred = cv2.GaussianBlur(_synthetic_gt(50, 60), (0, 0), 3)
    probabilities = pred / 255
    stretched = (probabilities - probabilities.min()) / (probabilities.max() - probabilities.min())

    ours = _ours(pred, gt)
    assert ours["Smeasure"].item() == pytest.approx(1 - stretched.mean(), abs=1e-12)
    assert ours["wFmeasure"].item() == 0.0
    # Without ground-truth foreground no threshold has a true positive: every curve is 0.
    for metric in ("Dice", "IoU", "Sen", "Spe"):
        assert torch.count_nonzero(ours[metric]) == 0, metric

    full = np.full_like(gt, 255)
    ours = _ours(pred, full)
    assert ours["Smeasure"].item() == pytest.approx(stretched.mean(), abs=1e-12)
    # No background: specificity is 0 / 0 where a threshold has true positives, as in the official code.
    assert torch.isnan(ours["Spe"]).any()


def test_one_pixel_foreground_scores_zero_smeasure():
    # The official code's sample std of one pixel is NaN and max(0, NaN) is 0; PySODMetrics returns
    # a positive value here instead.
    gt = np.zeros((40, 40), np.uint8)
    gt[20, 20] = 255
    pred = cv2.GaussianBlur(gt, (0, 0), 2)
    ours = _ours(pred, gt)
    assert ours["Smeasure"].item() == 0.0
    assert _ours(pred, gt, "uint8")["Smeasure"].item() == 0.0
    expected = _pysod_frame(pred, gt)
    for metric in ("wFmeasure", "MAE", "adpEm", "Em", "adpFm", "Fm"):
        np.testing.assert_allclose(ours[metric].numpy(), expected[metric], atol=TOLERANCE, err_msg=metric)


def test_perfect_negative_frame_scores_zero_dice():
    gt = np.zeros((30, 30), np.uint8)
    ours = _ours(np.zeros_like(gt), gt)
    assert ours["Dice"].max().item() == 0.0
    assert ours["Spe"].max().item() == 0.0
    assert ours["Smeasure"].item() == 1.0


def _probability_batch() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(5)
    y = torch.zeros(3, 1, 48, 64)
    y[0, :, 10:30, 12:40] = 1
    y[1, :, 5:20, 30:60] = 1
    y_pred = (0.8 * y + 0.3 * torch.rand(y.shape, generator=generator)).clamp(0, 1)
    return y_pred, y


def test_sunseg_metrics_accumulate_batches():
    y_pred, y = _probability_batch()
    metric = SunSegMetrics()
    metric(MetaTensor(y_pred[:2]), MetaTensor(y[:2]))  # as a MONAI evaluator passes them
    metric([y_pred[2], y_pred[0]], [y[2], y[0]])  # a list of channel-first items, as decollated batches
    frames = frame_values(*metric._prepare(torch.cat([y_pred, y_pred[:1]]), torch.cat([y, y[:1]])))
    assert metric.aggregate() == summarize(frames)
    assert metric.curves()["Dice"].shape == (256,)


def test_single_metrics_match_suite():
    y_pred, y = _probability_batch()
    suite = SunSegMetrics()
    suite(y_pred, y)
    expected = suite.aggregate()
    for metric_class in (SMeasure, WeightedFMeasure, MeanAbsoluteError, EMeasure, FMeasure, ThresholdCurves):
        metric = metric_class()
        metric(y_pred, y)
        result = metric.aggregate()
        if isinstance(result, torch.Tensor):
            name = {SMeasure: "Smeasure", WeightedFMeasure: "wFmeasure", MeanAbsoluteError: "MAE"}[
                metric_class
            ]
            result = {name: float(result)}
        for name, value in result.items():
            if name.startswith("curve"):
                continue
            assert value == pytest.approx(expected[name], abs=1e-12), (metric_class.__name__, name)


def test_minmax_off_scores_probabilities_as_given():
    y_pred, y = _probability_batch()
    stretched = SunSegMetrics()
    stretched(y_pred * 0.5, y)
    raw = SunSegMetrics(minmax=False)
    raw(y_pred * 0.5, y)
    assert stretched.aggregate()["MAE"] != raw.aggregate()["MAE"]
    expected_mae = (y_pred.double() * 0.5 - y.double()).abs().mean().item()
    assert raw.aggregate()["MAE"] == pytest.approx(expected_mae, abs=1e-12)


def test_probabilities_outside_unit_range_are_rejected():
    with pytest.raises(ValueError, match="sigmoid"):
        SunSegMetrics()(torch.full((1, 1, 4, 4), 3.0), torch.zeros(1, 1, 4, 4))


def test_sam_logits_binarize_at_sigmoid_half(shared_cases):
    import json

    case = shared_cases / "G6_sam_logits"
    expected = json.loads((case / "expected.json").read_text())
    positive = torch.from_numpy(np.load(case / "logits_pos.npy"))
    negative = torch.from_numpy(np.load(case / "logits_neg.npy"))
    assert (
        binarize(torch.sigmoid(positive)).sum().item() == expected["logits_pos"]["area_logit_gt_0_expected"]
    )
    assert binarize(torch.sigmoid(negative)).sum().item() == expected["logits_neg"]["area_expected"]
    assert (positive > 0).sum().item() == expected["logits_pos"]["area_sigmoid_gt_0.5_expected"]


def test_clinical_metrics_skip_empty_ground_truth():
    y_pred, y = _probability_batch()
    metric = SunSegMetrics(clinical=True)
    metric(y_pred, y)
    buffer = metric.get_buffer()
    dice = buffer[:, -3]
    # The third frame has no foreground: MONAI's ignore_empty gives NaN, never 0 or 1.
    assert torch.isnan(dice[2])
    binary = (y_pred[:2] > 0.5).double()
    intersection = (binary * y[:2]).flatten(1).sum(1)
    expected = 2 * intersection / (binary.flatten(1).sum(1) + y[:2].flatten(1).sum(1))
    torch.testing.assert_close(dice[:2], expected.double(), atol=1e-6, rtol=0)
    assert metric.aggregate()["binaryDice"] == pytest.approx(expected.mean().item(), abs=1e-6)


def test_handler_publishes_suite_on_engine():
    from ignite.engine import Engine
    from monai.bundle import ConfigParser

    y_pred, y = _probability_batch()
    # The snippet of docs/metrics.md, as a bundle config would build it.
    parser = ConfigParser(
        {
            "handler": {
                "_target_": "autosam.metrics.SunSegFrameMetricHandler",
                "key_metric": "Smeasure",
                "prefix": "val_",
                "output_transform": "$monai.handlers.from_engine(['pred', 'label'])",
            }
        }
    )
    handler = parser.get_parsed_content("handler")
    engine = Engine(lambda engine, batch: batch)
    handler.attach(engine, "val_Smeasure")
    engine.run([[{"pred": p, "label": t} for p, t in zip(y_pred, y, strict=True)]] * 2)

    expected = SunSegMetrics()
    expected(torch.cat([y_pred, y_pred]), torch.cat([y, y]))
    results = expected.aggregate()
    assert engine.state.metrics["val_Smeasure"] == pytest.approx(results["Smeasure"], abs=1e-12)
    for name, value in results.items():
        assert engine.state.metrics[f"val_{name}"] == pytest.approx(value, abs=1e-12), name


def test_handler_rejects_unknown_key_metric():
    from autosam.metrics import SunSegFrameMetricHandler

    with pytest.raises(ValueError, match="meanDice"):
        SunSegFrameMetricHandler(key_metric="dice")


def test_constant_quadrant_follows_numpy_rounding():
    # Two blobs leave the top-right quadrant without foreground. A constant prediction there makes
    # the official SSIM term 1 or 0 depending on whether numpy's mean of the block rounds back to
    # the constant, so the values below must cover both outcomes.
    gt = np.zeros((64, 64), np.uint8)
    gt[6:24, 6:24] = 255
    gt[40:58, 40:58] = 255
    soft = cv2.GaussianBlur(gt, (0, 0), 3)
    outcomes = set()
    for level in range(60, 200, 7):
        pred = soft.copy()
        pred[0:33, 33:64] = level  # the top-right quadrant around the centroid split (33, 33)
        probabilities = pred / 255
        stretched = (probabilities - probabilities.min()) / (probabilities.max() - probabilities.min())
        outcomes.add(bool(np.mean(stretched[0:33, 33:64]) == stretched[0, 40]))

        expected = _pysod_frame(pred, gt)["Smeasure"]
        for path in ("probability", "uint8"):
            assert _ours(pred, gt, path)["Smeasure"].item() == pytest.approx(expected, abs=1e-12), (
                level,
                path,
            )
    assert outcomes == {True, False}
