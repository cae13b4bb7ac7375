#!/usr/bin/env bash
# Set up .venv (if needed) and run one forward/backward pass of AutoSAMNet on a real polyp image.
#
# Usage: bash scripts/demo.sh [IMAGE]
# IMAGE defaults to the first Kvasir-SEG image under $AUTOSAM_SHARED_DATA (../shared/data beside
# the checkout). The network uses the small "tiny" SAM with random weights, so the mask means
# nothing. The demo shows that the package installs and that gradients reach the encoder g only.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

bash scripts/setup_env.sh
# shellcheck disable=SC1091
source "${AUTOSAM_VENV:-$repo_root/.venv}/bin/activate"

shared_data="${AUTOSAM_SHARED_DATA:-$repo_root/../shared/data}"
image="${1:-}"
if [[ -z "$image" ]]; then
    image="$(find "$shared_data/kvasir_seg/images" -name '*.jpg' 2>/dev/null | sort | head -n 1)"
fi
if [[ -z "$image" || ! -f "$image" ]]; then
    echo "demo: no image found; pass one: bash scripts/demo.sh path/to/image.jpg" >&2
    exit 1
fi

export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
python - "$image" <<'PY'
import sys
import time

import numpy as np
import torch
from PIL import Image

from autosam.networks import AutoSAMNet

path = sys.argv[1]
rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
image = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)  # 1 x 3 x H x W in [0, 255]

torch.manual_seed(0)
net = AutoSAMNet(sam_model_type="tiny", encoder_name="resnet18", encoder_input_size=128)
optimizer = torch.optim.Adam(net.trainable_parameters(), lr=1e-3)
net.train()

start = time.perf_counter()
logits = net(image)
loss = torch.sigmoid(logits).mean()
loss.backward()
optimizer.step()
elapsed = time.perf_counter() - start

sam_grads = sum(parameter.grad is not None for parameter in net.sam.parameters())
encoder_grads = sum(parameter.grad is not None for parameter in net.encoder.parameters())
print(f"image       {path} ({image.shape[-2]}x{image.shape[-1]})")
print(f"logits      {tuple(logits.shape)}, range [{logits.min().item():.3f}, {logits.max().item():.3f}]")
print(f"gradients   encoder g: {encoder_grads} tensors, SAM: {sam_grads} tensors")
print(f"time        {elapsed:.2f} s for forward + backward + step on the CPU")
PY
