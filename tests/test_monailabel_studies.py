"""A live MONAI Label server on a folder of Kvasir-SEG frames serves the autosam bundle.

One server runs for the whole module, on 127.0.0.1 with a free port, from the MONAI Label
environment. Before it starts, the bundle's network (tiny SAM, CPU demo sizes) is fitted for a few
steps to two of the served frames, so its masks follow the polyp labels. The served mask is then
compared with the label and with the same network run in this process.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from monailabel_support import (
    MonaiLabelServer,
    dice,
    http,
    monailabel_venv,
    predict_mask,
    serve_fitted_bundle,
)
from PIL import Image

pytestmark = pytest.mark.slow

NUM_IMAGES = 4
FIT_STEPS = 20
# Small and fast for 2 CPU cores; everything else comes from the CPU demo configuration.
TEST_OVERRIDES = {"max_epochs": 1, "batch_size": 2, "num_workers": 0, "progress_bar": False}


@dataclass
class Frame:
    image_id: str
    image: Path
    label: Path
    mask: np.ndarray  # H x W bool


@dataclass
class Served:
    server: MonaiLabelServer
    frames: list[Frame]
    bundle: Path
    network: torch.nn.Module
    spatial_size: int


def _copy_frames(kvasir: Path, studies: Path) -> list[Frame]:
    """Copy frames into a MONAI Label studies folder, with their masks as 0/1 PNG final labels."""
    labels = studies / "labels" / "final"
    labels.mkdir(parents=True)
    frames = []
    for image in sorted((kvasir / "images").glob("*.jpg"))[:NUM_IMAGES]:
        shutil.copy2(image, studies / image.name)
        mask = np.asarray(Image.open(kvasir / "masks" / image.name).convert("L")) > 128  # JPEG mask
        label = labels / f"{image.stem}.png"
        Image.fromarray(mask.astype(np.uint8)).save(label)
        frames.append(Frame(image.stem, studies / image.name, label, mask))
    return frames


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Iterator[Served]:
    work = tmp_path_factory.mktemp("monailabel-studies")
    frames = _copy_frames(shared_data / "kvasir_seg", work / "studies")
    fit_items = [{"image": str(f.image), "label": str(f.label)} for f in frames[:2]]
    with serve_fitted_bundle(
        work, str(work / "studies"), lambda: fit_items, overrides=TEST_OVERRIDES, fit_steps=FIT_STEPS
    ) as running:
        yield Served(running.server, frames, running.bundle, running.network, running.spatial_size)


def _infer(served: Served, image_id: str) -> np.ndarray:
    answer = http(
        "POST",
        f"{served.server.url}/infer/autosam",
        params={"image": image_id, "output": "image"},
        files={"params": (None, b"{}")},
    )
    assert answer.status == 200, answer.text
    return np.asarray(Image.open(io.BytesIO(answer.body)))


def test_info_lists_autosam(served: Served):
    info = http("GET", f"{served.server.url}/info/").json()
    model = info["models"]["autosam"]
    assert model["type"] == "segmentation"
    assert model["labels"] == {"polyp": 1}
    assert model["dimension"] == 2
    assert "autosam" in info["trainers"]
    assert info["labels"] == ["polyp"]


def test_datastore_lists_frames(served: Served):
    listing = http("GET", f"{served.server.url}/datastore/", params={"output": "all"}).json()
    assert sorted(listing["objects"]) == sorted(f.image_id for f in served.frames)
    assert all("final" in entry["labels"] for entry in listing["objects"].values())


def test_infer_mask_matches_label(served: Served):
    frame = served.frames[0]
    mask = _infer(served, frame.image_id)

    height, width = frame.mask.shape
    assert mask.shape == (height, width)
    assert set(np.unique(mask).tolist()) <= {0, 1}
    assert mask.sum() > 0
    assert dice(mask, frame.mask) > 0.6

    expected = predict_mask(served.network, str(frame.image), spatial_size=served.spatial_size)
    agreement = float((mask == expected).mean())
    assert agreement > 0.99


def test_infer_uploaded_file(served: Served):
    frame = served.frames[1]
    answer = http(
        "POST",
        f"{served.server.url}/infer/autosam",
        params={"output": "image"},
        files={"params": (None, b"{}"), "file": (frame.image.name, frame.image.read_bytes())},
    )
    assert answer.status == 200, answer.text
    mask = np.asarray(Image.open(io.BytesIO(answer.body)))
    assert mask.shape == frame.mask.shape
    assert dice(mask, frame.mask) > 0.6


@pytest.mark.parametrize(
    ("case", "status", "phrase"),
    [
        ("unknown model", 404, "model 'no-such-model'"),
        ("unknown image id", 404, "image id 'no-such-image'"),
        ("text file", 415, "'.txt'"),
        ("text named as PNG", 422, "cannot read"),
        ("unknown training model", 404, "model 'no-such-model'"),
    ],
)
def test_bad_request_gets_4xx(served: Served, case: str, status: int, phrase: str):
    url = served.server.url
    image_id = served.frames[0].image_id
    text = b"labelled by hand, not an image\n"
    form = {"params": (None, b"{}")}
    if case == "unknown model":
        answer = http("POST", f"{url}/infer/no-such-model", params={"image": image_id}, files=form)
    elif case == "unknown image id":
        answer = http("POST", f"{url}/infer/autosam", params={"image": "no-such-image"}, files=form)
    elif case == "text file":
        answer = http("POST", f"{url}/infer/autosam", files={**form, "file": ("notes.txt", text)})
    elif case == "text named as PNG":
        answer = http("POST", f"{url}/infer/autosam", files={**form, "file": ("notes.png", text)})
    else:
        answer = http("POST", f"{url}/train/no-such-model", json_body={})

    assert answer.status == status, answer.text
    assert phrase in answer.json()["detail"]

    # The server keeps serving after the rejected request.
    assert http("GET", f"{url}/info/").status == 200
    assert _infer(served, image_id).shape == served.frames[0].mask.shape


# Loads the bundle with MONAI Label's own bundle tasks, as its stock "monaibundle" app does.
STOCK_TASKS_SCRIPT = """
import json, sys
from monailabel.tasks.infer.bundle import BundleInferTask
from monailabel.tasks.train.bundle import BundleTrainTask
infer = BundleInferTask(sys.argv[1], {})
train = BundleTrainTask(sys.argv[1], {})
print(json.dumps({
    "infer_valid": infer.is_valid(),
    "labels": infer.labels,
    "dimension": infer.dimension,
    "pre": [type(t).__name__ for t in infer.pre_transforms({"device": "cpu"})],
    "inferer": type(infer.inferer({"device": "cpu"})).__name__,
    "post": [type(t).__name__ for t in infer.post_transforms({"device": "cpu"})],
    "train_valid": train.is_valid(),
}))
"""


def test_stock_bundle_tasks_load_bundle(served: Served):
    python = monailabel_venv() / "bin" / "python"
    result = subprocess.run(
        [str(python), "-c", STOCK_TASKS_SCRIPT, str(served.bundle)],
        capture_output=True,
        text=True,
        timeout=300,
        env=served.server.environment(),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["infer_valid"]
    assert loaded["train_valid"]
    assert loaded["labels"] == {"polyp": 1}
    assert loaded["dimension"] == 2
    assert loaded["pre"][0] == "LoadImageTensord"  # MONAI Label's wrapper around the bundle's LoadImaged
    assert loaded["pre"][-1] == "SamGeometryd"
    assert loaded["inferer"] == "SimpleInferer"
    assert loaded["post"][-1] == "Restored"


def test_train_one_epoch_writes_checkpoint(served: Served):
    checkpoint = served.bundle / "models" / "model.pt"
    before = checkpoint.stat().st_mtime_ns
    files_before = set((served.bundle / "models").iterdir())

    answer = http(
        "POST",
        f"{served.server.url}/train/autosam",
        json_body={"max_epochs": 1, "val_split": 0.25, "device": "cpu", "multi_gpu": False},
    )
    assert answer.status == 200, answer.text
    task = served.server.wait_for_training()
    assert task["status"] == "DONE", "\n".join(task.get("details", []))

    assert checkpoint.stat().st_mtime_ns > before
    new_files = set((served.bundle / "models").iterdir()) - files_before
    assert all(path.suffix == ".pt" for path in new_files)
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    state = state.get("model", state)  # CheckpointSaver stores a lone model's state_dict unwrapped
    assert set(state) == set(served.network.state_dict())

    # The server serves the new checkpoint.
    mask = _infer(served, served.frames[0].image_id)
    assert mask.shape == served.frames[0].mask.shape


def test_server_stops_cleanly(served: Served):
    assert served.server.stop() == 0
