"""Helpers for the MONAI Label tests: the server process, Orthanc, HTTP calls and a quickly trained checkpoint.

MONAI Label runs from its own virtual environment (`scripts/setup_monailabel.sh`), found through
AUTOSAM_MONAILABEL_VENV (default: .venv-monailabel beside this checkout's .venv). Every server
listens on 127.0.0.1 on a free port, and every request goes there.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
LOOPBACK = "127.0.0.1"
ORTHANC_DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")


def monailabel_venv() -> Path:
    """Return the MONAI Label environment, failing with the set-up command when it is missing."""
    venv = Path(os.environ.get("AUTOSAM_MONAILABEL_VENV", REPO_ROOT / ".venv-monailabel"))
    if not (venv / "bin" / "monailabel").is_file():
        pytest.fail(
            f"MONAI Label environment '{venv}' not found (no bin/monailabel); "
            "run `bash scripts/setup_monailabel.sh` or set AUTOSAM_MONAILABEL_VENV"
        )
    return venv


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


@dataclass
class Response:
    """Status, headers and body of one HTTP response."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode())

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


def _multipart(fields: dict[str, tuple[str | None, bytes]]) -> tuple[bytes, str]:
    """Encode {name: (filename, content)} as multipart/form-data; a None filename makes a plain form field."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, (filename, content) in fields.items():
        if filename is None:
            header = f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
        else:
            header = (
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                "Content-Type: application/octet-stream\r\n\r\n"
            )
        parts.append(header.encode() + content + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def http(
    method: str,
    url: str,
    *,
    params: dict[str, Any] | None = None,
    json_body: Any = None,
    files: dict[str, tuple[str | None, bytes]] | None = None,
    data: bytes | None = None,
    content_type: str | None = None,
    timeout: float = 120.0,
) -> Response:
    """Send one request to a loopback server and return the response, 4xx and 5xx included."""
    host = urllib.parse.urlsplit(url).hostname
    assert host in (LOOPBACK, "localhost", "::1"), f"tests only talk to loopback servers, not {host}"
    if params:
        url = f"{url}?{urllib.parse.urlencode(params)}"
    headers = {}
    if json_body is not None:
        data, content_type = json.dumps(json_body).encode(), "application/json"
    elif files is not None:
        data, content_type = _multipart(files)
    if content_type:
        headers["Content-Type"] = content_type
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return Response(answer.status, dict(answer.headers), answer.read())
    except urllib.error.HTTPError as err:
        return Response(err.code, dict(err.headers), err.read())


def wait_until_serving(url: str, process: subprocess.Popen, log_file: Path, timeout: float) -> None:
    """Poll `url` until it returns 200; fail with the log's end if the process exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"server exited with {process.returncode} before serving; log:\n{tail(log_file)}")
        try:
            if http("GET", url, timeout=5).status == 200:
                return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(1.0)
    pytest.fail(f"server did not answer {url} within {timeout:.0f} s; log:\n{tail(log_file)}")


def tail(log_file: Path, lines: int = 60) -> str:
    """Return the last lines of a log file."""
    if not log_file.is_file():
        return "(no log)"
    return "\n".join(log_file.read_text(errors="replace").splitlines()[-lines:])


def stop_process(process: subprocess.Popen, timeout: float = 30.0) -> int | None:
    """Send SIGINT to the process group (as Ctrl+C would) and wait; kill it if it does not stop in time.

    Returns the exit code, or None when the process had to be killed.
    """
    if process.poll() is not None:
        return process.returncode
    os.killpg(process.pid, signal.SIGINT)
    try:
        return process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        return None


class MonaiLabelServer:
    """`monailabel start_server` on 127.0.0.1 with a free port, run from the MONAI Label environment."""

    def __init__(self, app_dir: Path, studies: str, work_dir: Path, conf: dict[str, str]) -> None:
        self.app_dir = app_dir
        self.studies = studies
        self.work_dir = work_dir
        self.conf = conf
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.log_file = work_dir / "monailabel.log"
        self.process: subprocess.Popen | None = None

    def environment(self) -> dict[str, str]:
        venv = monailabel_venv()
        env = dict(os.environ)
        env.pop("PYTHONPATH", None)
        env.update(
            {
                "PATH": f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
                "VIRTUAL_ENV": str(venv),
                "HOME": str(self.work_dir / "home"),  # MONAI Label keeps caches under ~/.cache
                "MONAI_LABEL_SESSION_PATH": str(self.work_dir / "sessions"),
                "MONAI_LABEL_DICOMWEB_CACHE_PATH": str(self.work_dir / "dicom-cache"),
                "MONAI_LABEL_TRACKING_ENABLED": "false",
                "MONAI_LABEL_AUTO_UPDATE_SCORING": "false",
                "OMP_NUM_THREADS": env.get("OMP_NUM_THREADS", "2"),
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def start(self) -> None:
        """Launch the server process; `wait_until_serving` waits for its first response."""
        command = [
            str(monailabel_venv() / "bin" / "monailabel"),
            "start_server",
            "--app",
            str(self.app_dir),
            "--studies",
            self.studies,
            "--host",
            LOOPBACK,
            "--port",
            str(self.port),
        ]
        for key, value in self.conf.items():
            command += ["--conf", key, value]
        (self.work_dir / "home").mkdir(parents=True, exist_ok=True)
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                command,
                cwd=self.work_dir,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_until_serving(self, timeout: float = 180.0) -> None:
        assert self.process is not None, "call start() first"
        wait_until_serving(f"{self.url}/info/", self.process, self.log_file, timeout)

    def stop(self) -> int | None:
        if self.process is None:
            return None
        return stop_process(self.process)

    def wait_for_training(self, timeout: float = 300.0) -> dict[str, Any]:
        """Poll GET /train/ until the latest task is DONE or ERROR and return it."""
        deadline = time.monotonic() + timeout
        task: dict[str, Any] = {}
        while time.monotonic() < deadline:
            answer = http("GET", f"{self.url}/train/")
            if answer.status == 200:
                task = answer.json()
                if task.get("status") in ("DONE", "ERROR"):
                    return task
            time.sleep(2.0)
        pytest.fail(
            f"training did not finish within {timeout:.0f} s; last status {task}; log:\n{tail(self.log_file)}"
        )


class OrthancServer:
    """Debian's Orthanc with the DICOMweb plugin, on 127.0.0.1 with a free HTTP port and no DICOM port."""

    def __init__(self, work_dir: Path) -> None:
        binary = shutil.which("Orthanc")
        if binary is None or not ORTHANC_DICOMWEB_PLUGIN.is_file():
            pytest.fail(
                "Orthanc or its DICOMweb plugin is not installed; run `bash scripts/setup_orthanc.sh`"
            )
        self.binary = binary
        self.work_dir = work_dir
        self.port = free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.dicomweb_url = f"{self.url}/dicom-web"
        self.log_file = work_dir / "orthanc.log"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> None:
        config = {
            "Name": "autosam-test",
            "StorageDirectory": str(self.work_dir / "storage"),
            "IndexDirectory": str(self.work_dir / "storage"),
            "HttpPort": self.port,
            "RemoteAccessAllowed": False,  # Orthanc has no bind address setting; this makes it reject clients on other machines
            "AuthenticationEnabled": False,
            "DicomServerEnabled": False,
            "Plugins": [str(ORTHANC_DICOMWEB_PLUGIN)],
            "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        }
        config_file = self.work_dir / "orthanc.json"
        config_file.write_text(json.dumps(config, indent=2))
        with open(self.log_file, "wb") as log:
            self.process = subprocess.Popen(
                [self.binary, str(config_file)],
                cwd=self.work_dir,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until_serving(f"{self.url}/system", self.process, self.log_file, timeout)

    def upload(self, dicom_file: Path) -> dict[str, Any]:
        answer = http(
            "POST", f"{self.url}/instances", data=dicom_file.read_bytes(), content_type="application/dicom"
        )
        assert answer.status == 200, f"Orthanc rejected '{dicom_file}': {answer.status} {answer.text}"
        return answer.json()

    def stop(self) -> int | None:
        if self.process is None:
            return None
        return stop_process(self.process)


def dice(prediction: np.ndarray, reference: np.ndarray) -> float:
    """Dice coefficient of two binary arrays (1.0 when both are empty)."""
    prediction, reference = prediction.astype(bool), reference.astype(bool)
    total = prediction.sum() + reference.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(prediction, reference).sum() / total)


def load_bundle_network(config_file: Path, bundle_root: Path) -> torch.nn.Module:
    """Instantiate `network_def` of a bundle config, as MONAI Label does, on the CPU."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(config_file))
    parser["bundle_root"] = str(bundle_root)
    parser["device"] = "cpu"
    return parser.get_parsed_content("network_def", instantiate=True)


def fit_checkpoint(
    network: torch.nn.Module,
    items: list[dict[str, str]],
    *,
    spatial_size: int,
    steps: int,
    checkpoint: Path,
    seed: int = 0,
) -> None:
    """Fit the network's trainable part to a few image/label files and save {"model": state_dict}.

    It replaces a trained model: a randomly initialised g gives an arbitrary mask, which a
    test cannot compare with the label. A few dozen full-batch Adam steps on the served images make
    the mask overlap the label, so comparing the two is meaningful.
    """
    from monai.transforms import Compose

    from autosam.data.transforms import get_deterministic_transforms

    torch.manual_seed(seed)
    transforms = Compose(get_deterministic_transforms(("image", "label"), spatial_size=spatial_size))
    batch = [transforms(item) for item in items]
    images = torch.stack([b["image"].as_tensor() for b in batch])  # B x 3 x S x S
    labels = torch.stack([b["label"].as_tensor() for b in batch])  # B x 1 x S x S

    network.train()
    optimizer = torch.optim.Adam(network.trainable_parameters(), lr=1e-3)
    with torch.no_grad():
        embeddings = network.embed_images(images)
    for _ in range(steps):
        logits = network(images, image_embeddings=embeddings)
        probabilities = torch.sigmoid(logits)
        soft_dice = (2 * (probabilities * labels).sum() + 1) / (probabilities.sum() + labels.sum() + 1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, labels) + 1 - soft_dice
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    # After a few steps the running BatchNorm statistics still lag the batch statistics the steps
    # used, so inference (eval mode) would disagree with training. One pass that averages over this
    # batch sets them.
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.reset_running_stats()
            module.momentum = None  # cumulative average
    with torch.no_grad():
        network(images, image_embeddings=embeddings)
    network.eval()
    checkpoint.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": network.state_dict()}, checkpoint)


def predict_mask(network: torch.nn.Module, image_file: str, *, spatial_size: int) -> np.ndarray:
    """Return the binary H x W mask of one picture at its own size, computed in this process."""
    from monai.transforms import Compose

    from autosam.data.transforms import get_deterministic_transforms

    transforms = Compose(get_deterministic_transforms(("image",), spatial_size=spatial_size))
    data = transforms({"image": image_file})
    with torch.no_grad():
        logits = network(data["image"].as_tensor()[None])  # 1 x 1 x S x S
    pred = data["image"].clone()[:1]
    pred.array = torch.sigmoid(logits[0])  # keeps the image's transform record for the inverse
    restored = transforms.inverse({"image": pred})["image"]
    return (restored[0].numpy() > 0.5).astype(np.uint8)


@dataclass
class ServedBundle:
    """A running MONAI Label server, the bundle copy it serves, and the fitted network behind model.pt."""

    server: MonaiLabelServer
    bundle: Path
    network: torch.nn.Module
    spatial_size: int


@contextlib.contextmanager
def serve_fitted_bundle(
    work: Path,
    studies: str,
    fit_items: Callable[[], list[dict[str, str]]],
    *,
    overrides: dict[str, Any],
    fit_steps: int,
    label: str | None = None,
) -> Iterator[ServedBundle]:
    """Write an app folder for the repository's bundle (CPU demo sizes), start the server, fit model.pt.

    The server starts first and the checkpoint is fitted while it loads; the app serves the model
    once model.pt exists. `fit_items` returns the image/label files to fit on; `label` renames the
    foreground label that the server reports.
    """
    from autosam.monailabel.app_dir import create_app_dir

    overrides_file = work / "test_overrides.json"
    overrides_file.write_text(json.dumps(overrides))
    bundle = create_app_dir(
        work / "app",
        bundle=REPO_ROOT / "bundle",
        overrides=[
            REPO_ROOT / "configs" / "cpu_demo.json",
            REPO_ROOT / "configs" / "monailabel.json",
            overrides_file,
        ],
        label=label,
    )
    server = MonaiLabelServer(work / "app", studies, work, conf={"models": "autosam"})
    server.start()
    try:
        inference_config = bundle / "configs" / "inference.json"
        spatial_size = int(json.loads(inference_config.read_text())["spatial_size"])
        network = load_bundle_network(inference_config, bundle)
        fit_checkpoint(
            network,
            fit_items(),
            spatial_size=spatial_size,
            steps=fit_steps,
            checkpoint=bundle / "models" / "model.pt",
        )
        server.wait_until_serving()
        yield ServedBundle(server, bundle, network, spatial_size)
    finally:
        server.stop()
