"""Benchmark the SUN-SEG metric suite against PySODMetrics and the official threshold loop.

    OMP_NUM_THREADS=1 python scripts/bench_metrics.py [--frames 32] [--batch_size 2] [--threads 1] [--device cpu]

Frames are real Kvasir-SEG masks resized to 352 x 352 with soft predictions made from them (blur,
shift, noise). The reference is what the official SUN-SEG evaluator runs per frame: PySODMetrics'
S-measure, weighted F-measure, E-measure, F-measure and MAE, plus a numpy transcription of its
Dice / IoU / sensitivity / specificity loop over 256 thresholds. Both sides run in the same process
on the same frames. The script prints milliseconds per frame and the largest difference between
the two sides' values.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from autosam.metrics import frame_values, prepare_uint8_frames, uint8_frame_values, unpack

REPO_ROOT = Path(__file__).resolve().parents[1]
# The numpy transcription of the official threshold loop lives with the tests that use it as oracle.
sys.path.insert(0, str(REPO_ROOT))
from tests.test_metrics import official_threshold_curves, pysod_metrics  # noqa: E402

SIZE = 352


def load_frames(data_root: Path, count: int) -> tuple[np.ndarray, np.ndarray]:
    """(predictions, ground truths) as count x 352 x 352 uint8 arrays."""
    mask_paths = sorted((data_root / "kvasir_seg" / "masks").iterdir())
    rng = np.random.default_rng(0)
    preds, gts = [], []
    for index in range(count):
        gt = cv2.imread(str(mask_paths[index % len(mask_paths)]), cv2.IMREAD_GRAYSCALE)
        gt = cv2.resize(gt, (SIZE, SIZE), interpolation=cv2.INTER_NEAREST)
        soft = cv2.GaussianBlur(gt, (0, 0), 2 + index % 5).astype(np.float64)
        soft = np.roll(soft, (index % 7 - 3, 5 - index % 11), axis=(0, 1))
        pred = np.clip(soft + rng.normal(0, 15, gt.shape), 0, 255).astype(np.uint8)
        preds.append(pred)
        gts.append(gt)
    return np.stack(preds), np.stack(gts)


class Timer:
    """Wall-clock and process CPU seconds of a block; CPU time is steadier on a shared machine."""

    def __enter__(self) -> Timer:
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def run_reference(preds: np.ndarray, gts: np.ndarray) -> tuple[Timer, dict[str, np.ndarray]]:
    """Time of the reference suite on every frame, and its per-frame values."""
    metrics = pysod_metrics()
    sm, wfm, em, fm, mae = (metrics[name] for name in ("Smeasure", "wFmeasure", "Em", "Fm", "MAE"))
    curves = []
    with Timer() as timer:
        for pred, gt in zip(preds, gts, strict=True):
            for metric in (sm, wfm, em, fm, mae):
                metric.step(pred=pred, gt=gt)
            official = official_threshold_curves(pred, gt)
            curves.append(np.stack([official[name] for name in ("Sen", "Spe", "Dice", "IoU")]))
    curves_array = np.stack(curves)
    values = {
        "Smeasure": np.array(sm.sms),
        "wFmeasure": np.array(wfm.weighted_fms),
        "MAE": np.array(mae.maes),
        "adpEm": np.array(em.adaptive_ems),
        "Em": np.stack(em.changeable_ems),
        "adpFm": np.array(fm.adaptive_fms),
        "Fm": np.stack(fm.changeable_fms),
        "Sen": curves_array[:, 0],
        "Spe": curves_array[:, 1],
        "Dice": curves_array[:, 2],
        "IoU": curves_array[:, 3],
    }
    return timer, values


def run_suite(
    preds: np.ndarray, gts: np.ndarray, batch_size: int, device: str, path: str = "uint8"
) -> tuple[Timer, torch.Tensor]:
    """Time of the batched suite on every frame, and its packed rows.

    `path` "uint8" scores the 8-bit frames as the CLI does (`uint8_frame_values`). "probability"
    prepares float64 frames first and runs the per-pixel path that the MONAI metrics use.
    """
    pred_levels = torch.from_numpy(preds)
    gt_levels = torch.from_numpy(gts)
    rows = []
    if device != "cpu":
        torch.cuda.synchronize()
    with Timer() as timer:
        for first in range(0, len(preds), batch_size):
            batch = slice(first, first + batch_size)
            pred, gt = pred_levels[batch].to(device), gt_levels[batch].to(device)
            if path == "uint8":
                rows.append(uint8_frame_values(pred, gt).cpu())
            else:
                rows.append(frame_values(*prepare_uint8_frames(pred, gt)).cpu())
    return timer, torch.cat(rows)


def hardware() -> str:
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} logical CPUs, torch {torch.__version__}, {torch.get_num_threads()} torch thread(s)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--frames", type=int, default=32, help="number of 352 x 352 frames")
    parser.add_argument("--batch_size", type=int, default=2, help="frames per batch of the suite")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs of each side; the fastest counts")
    parser.add_argument("--device", default="cpu", help="torch device of the suite, e.g. cpu or cuda")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("AUTOSAM_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")),
        help="folder holding kvasir_seg/masks",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    preds, gts = load_frames(args.data, args.frames)
    for path in ("uint8", "probability"):
        run_suite(
            preds[: args.batch_size], gts[: args.batch_size], args.batch_size, args.device, path
        )  # warm-up

    # Runs alternate, so a load change on a shared machine slows every side alike.
    wall: dict[str, list[float]] = {"reference": [], "uint8": [], "probability": []}
    cpu: dict[str, list[float]] = {"reference": [], "uint8": [], "probability": []}
    rows: dict[str, torch.Tensor] = {}
    for _ in range(args.repeats):
        timer, reference = run_reference(preds, gts)
        wall["reference"].append(timer.wall)
        cpu["reference"].append(timer.cpu)
        for path in ("uint8", "probability"):
            timer, rows[path] = run_suite(preds, gts, args.batch_size, args.device, path)
            wall[path].append(timer.wall)
            cpu[path].append(timer.cpu)
    frames = len(preds)
    wall_ms = {name: 1000 * min(values) / frames for name, values in wall.items()}
    cpu_ms = {name: 1000 * min(values) / frames for name, values in cpu.items()}

    print(f"hardware: {hardware()}; load average {os.getloadavg()[0]:.1f}")
    print(f"frames: {frames} x {SIZE} x {SIZE}, suite batch size {args.batch_size}, device {args.device}")
    print("ms per frame, best of the runs: wall clock / process CPU time")
    print(
        f"reference (PySODMetrics + official threshold loop): {wall_ms['reference']:7.2f} / {cpu_ms['reference']:7.2f}"
    )
    labels = {"uint8": "8-bit frames (CLI)", "probability": "probability maps (MONAI metrics)"}
    for path in ("uint8", "probability"):
        ours = unpack(rows[path])
        worst = max(float(np.nanmax(np.abs(ours[name].numpy() - value))) for name, value in reference.items())
        print(
            f"autosam.metrics, {labels[path]:<32}  {wall_ms[path]:7.2f} / {cpu_ms[path]:7.2f}, "
            f"speed-up {wall_ms['reference'] / wall_ms[path]:.1f}x / {cpu_ms['reference'] / cpu_ms[path]:.1f}x, "
            f"max |difference| {worst:.1e}"
        )


if __name__ == "__main__":
    main()
