"""Distributed training and evaluation with `torchrun` on CPUs (gloo backend, loopback only).

Two processes train one epoch on four real Kvasir-SEG images through `multi_gpu_train.json`, then
evaluate three images with `multi_gpu_evaluate.json` (an uneven split: two frames on rank 0, one
on rank 1). The oracle of the evaluation is the single-process evaluation of the same checkpoint.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.handlers import CheckpointSaver, MetricsSaver, StatsHandler, TensorBoardStatsHandler
from PIL import Image

from autosam.distributed import handlers_for_rank, init_distributed, partition_for_rank
from autosam.networks import AutoSAMNet

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "bundle" / "configs"
CPU_DEMO = REPO_ROOT / "configs" / "cpu_demo.json"
TRAIN_CONFIGS = [CONFIGS / "train.json", CONFIGS / "multi_gpu_train.json", CPU_DEMO]
EVALUATE_CONFIGS = [CONFIGS / "train.json", CONFIGS / "evaluate.json", CPU_DEMO]

# Small sizes keep the three runs near a minute on 2 CPU cores. Batch size 1 in evaluation makes
# every image pass through the network alone in both runs, so the predictions are bit-identical.
FAST_SETTINGS = {
    "spatial_size": 128,
    "encoder_input_size": 128,
    "max_epochs": 1,
    "batch_size": 2,
    "val_batch_size": 1,
    "num_workers": 0,
    "progress_bar": False,
}
TOLERANCE = 1e-6


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _bundle_arguments(config_files: list[Path], overrides: dict[str, object]) -> list[str]:
    config_list = "[" + ",".join(f"'{path}'" for path in config_files) + "]"
    arguments = ["run", "--config_file", config_list, "--meta_file", str(CONFIGS / "metadata.json")]
    for key, value in overrides.items():
        arguments += [f"--{key}", str(value)]
    return arguments


def _run(command: list[str], cwd: Path) -> str:
    # gloo picks its network interface from the host name unless GLOO_SOCKET_IFNAME names one, so pin loopback.
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=environment, timeout=600)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"{' '.join(command[:8])} ... failed:\n{output[-6000:]}"
    return output


def _torchrun(config_files: list[Path], cwd: Path, **overrides: object) -> str:
    launcher = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node=2",
        "--master_addr=127.0.0.1",
        f"--master_port={_free_loopback_port()}",
        "-m",
        "monai.bundle",
    ]
    return _run(launcher + _bundle_arguments(config_files, overrides), cwd)


def _single_process(config_files: list[Path], cwd: Path, **overrides: object) -> str:
    return _run([sys.executable, "-m", "monai.bundle", *_bundle_arguments(config_files, overrides)], cwd)


@pytest.fixture(scope="module")
def distributed_runs(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict:
    """Train with torchrun, then evaluate the checkpoint in one process and with torchrun."""
    work = tmp_path_factory.mktemp("distributed")
    images = sorted((shared_data / "kvasir_seg" / "images").glob("*.jpg"))[:7]
    items = [
        {
            "image": str(path),
            "label": str(shared_data / "kvasir_seg" / "masks" / path.name),
            "case": path.stem,
        }
        for path in images
    ]
    (work / "datalist.json").write_text(json.dumps({"training": items[:4], "validation": items[4:]}))
    (work / "fast.json").write_text(json.dumps(FAST_SETTINGS))
    common = {
        "datalist": work / "datalist.json",
        "dataset_dir": shared_data / "kvasir_seg",
        "ckpt_dir": work / "models",
    }

    train_log = _torchrun([*TRAIN_CONFIGS, work / "fast.json"], work, output_dir=work / "train", **common)
    _single_process([*EVALUATE_CONFIGS, work / "fast.json"], work, output_dir=work / "eval_single", **common)
    evaluate_ddp = [*EVALUATE_CONFIGS[:2], CONFIGS / "multi_gpu_evaluate.json", CPU_DEMO, work / "fast.json"]
    _torchrun(evaluate_ddp, work, output_dir=work / "eval_ddp", **common)
    return {"work": work, "train_log": train_log}


def test_torchrun_training_saves_trainable_weights(distributed_runs: dict) -> None:
    models = distributed_runs["work"] / "models"
    assert (models / "model.pt").is_file()
    assert (models / "checkpoint_epoch=1.pt").is_file()

    # Ignite saves a one-entry save_dict (the best model) as the bare state dict.
    state_dict = torch.load(models / "model.pt", map_location="cpu", weights_only=True)
    latest = torch.load(models / "checkpoint_epoch=1.pt", map_location="cpu", weights_only=True)
    assert {"model", "optimizer", "lr_scheduler"} <= set(latest)
    assert not [key for key in state_dict if key.startswith("sam.")]
    assert any(key.startswith("encoder.") for key in state_dict)

    network = AutoSAMNet(
        sam_model_type="tiny", encoder_name="resnet18", encoder_input_size=128, learn_logit_affine=True
    )
    network.load_state_dict(state_dict, strict=True)


def test_torchrun_training_writes_files_on_rank_zero(distributed_runs: dict) -> None:
    train_log = distributed_runs["train_log"]
    assert "rank 0 of 2, backend gloo" in train_log
    assert "rank 1 of 2, backend gloo" in train_log

    # A TensorBoard event file is named events.out.tfevents.<time>.<host>.<pid>.<n>: one writer pid.
    event_files = list((distributed_runs["work"] / "train").glob("events.out.tfevents.*"))
    writer_pids = {path.name.split(".")[-2] for path in event_files}
    assert event_files
    assert len(writer_pids) == 1

    history = (distributed_runs["work"] / "train" / "training_history.csv").read_text().splitlines()
    assert len(history) == 2  # header and epoch 1, written once


def test_distributed_evaluation_matches_single_process(distributed_runs: dict) -> None:
    work = distributed_runs["work"]
    single = json.loads((work / "eval_single" / "metrics.json").read_text())
    distributed = json.loads((work / "eval_ddp" / "metrics.json").read_text())

    assert single["frames"] == 3
    assert distributed["frames"] == 3
    assert set(distributed["overall"]) == set(single["overall"])
    for name, value in single["overall"].items():
        assert abs(distributed["overall"][name] - value) <= TOLERANCE, name

    assert set(distributed["per_case"]) == set(single["per_case"])
    for case, values in single["per_case"].items():
        for name, value in values.items():
            assert abs(distributed["per_case"][case][name] - value) <= TOLERANCE, (case, name)


def test_distributed_predictions_match_single_process(distributed_runs: dict) -> None:
    work = distributed_runs["work"]
    single_root = work / "eval_single" / "predictions"
    distributed_root = work / "eval_ddp" / "predictions"
    single_files = sorted(path.relative_to(single_root) for path in single_root.rglob("*.png"))
    distributed_files = sorted(path.relative_to(distributed_root) for path in distributed_root.rglob("*.png"))

    assert len(single_files) == 6  # probability map and mask of three images
    assert distributed_files == single_files
    for relative in single_files:
        expected = np.asarray(Image.open(single_root / relative))
        actual = np.asarray(Image.open(distributed_root / relative))
        assert np.array_equal(actual, expected), relative


@pytest.mark.parametrize("even_divisible, sizes", [(True, [3, 3]), (False, [3, 2])])
def test_partition_for_rank_splits_datalist(
    monkeypatch: pytest.MonkeyPatch, even_divisible: bool, sizes: list[int]
) -> None:
    items = [{"case": f"case{index}"} for index in range(5)]
    monkeypatch.setenv("WORLD_SIZE", "2")

    shares = []
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        shares.append(
            [item["case"] for item in partition_for_rank(items, shuffle=True, even_divisible=even_divisible)]
        )

    assert [len(share) for share in shares] == sizes
    assert set(shares[0]) | set(shares[1]) == {item["case"] for item in items}
    if not even_divisible:
        assert not set(shares[0]) & set(shares[1])


def test_partition_for_rank_rejects_too_few_items(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="3 items but the process group has 4 ranks"):
        partition_for_rank([{}, {}, {}])


def test_handlers_for_rank_drops_file_writers(tmp_path: Path) -> None:
    network = torch.nn.Linear(2, 1)
    stats = StatsHandler()
    metrics_saver = MetricsSaver(save_dir=str(tmp_path / "metrics"))
    checkpoint_saver = CheckpointSaver(save_dir=str(tmp_path / "models"), save_dict={"model": network})
    tensorboard = TensorBoardStatsHandler(log_dir=str(tmp_path / "runs"))
    handlers = [stats, checkpoint_saver, metrics_saver, tensorboard]

    assert handlers_for_rank(handlers, rank=0) == handlers
    # MetricsSaver gathers file names from every rank, so it must stay on rank 1 too.
    assert handlers_for_rank(handlers, rank=1) == [stats, metrics_saver]
    assert handlers_for_rank(None, rank=1) is None


def test_init_distributed_needs_torchrun(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(RuntimeError, match="torchrun --nproc_per_node"):
        init_distributed("gloo")


@pytest.mark.parametrize(
    "base_configs, multi_gpu_config",
    [
        (["train.json"], "multi_gpu_train.json"),
        (["train.json", "light.json"], "multi_gpu_train.json"),
        (["train.json", "evaluate.json"], "multi_gpu_evaluate.json"),
    ],
)
def test_multi_gpu_overrides_match_base_config(base_configs: list[str], multi_gpu_config: str) -> None:
    base = ConfigParser()
    base.read_config([CONFIGS / name for name in base_configs])
    overrides = ConfigParser.load_config_file(CONFIGS / multi_gpu_config)

    # Every nested override must land in a section that the base config defines.
    for key in overrides:
        parent = key.rsplit("#", 1)[0] if "#" in key else None
        if parent is not None:
            assert parent in base, (
                f"{multi_gpu_config} overrides '{key}' but '{parent}' is not in {base_configs}"
            )

    # Handlers disabled by position must still be the TensorBoard writers.
    for key in overrides:
        if key.endswith("#_disabled_"):
            handler = key.removesuffix("#_disabled_")
            assert base[f"{handler}#_target_"] == "TensorBoardStatsHandler", key
