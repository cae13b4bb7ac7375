#!/usr/bin/env bash
# Create the MONAI Label environment (if missing): monailabel 0.8.5 and autosam in a virtual
# environment of their own, beside the main .venv.
#
# Usage: bash scripts/setup_monailabel.sh
#
# Why a separate environment: monailabel 0.8.5's modules import only with pydicom<3,
# dicomweb-client<0.60, pynetdicom<3 and numpy<2 (pydicom-seg and numpymaxflow need them), while
# the main environment uses pydicom 3 and numpy 2. The main environment stays as it is.
#
# AUTOSAM_MONAILABEL_VENV selects the folder (default: .venv-monailabel in the repository root).
# AUTOSAM_TORCH_SPEC overrides the torch pin exactly as for scripts/setup_env.sh.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${AUTOSAM_MONAILABEL_VENV:-$repo_root/.venv-monailabel}"
python_bin="${PYTHON:-python3}"
monailabel_version="0.8.5"

# shellcheck source=scripts/torch_spec.sh
source "$repo_root/scripts/torch_spec.sh" setup_monailabel

# Reinstall only when the requirements, this script or the torch pin changed.
stamp="$venv/.autosam-installed"
wanted="$(cat "$repo_root/setup.cfg" "$repo_root/pyproject.toml" "${BASH_SOURCE[0]}" | sha256sum | cut -c1-16) ${AUTOSAM_TORCH_SPEC}"
if [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$wanted" ]]; then
    echo "setup_monailabel: $venv is up to date"
    exit 0
fi

start_seconds=$SECONDS
if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup_monailabel: creating $venv"
    "$python_bin" -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"

# Every pip call below, and the isolated build environments pip creates for source packages,
# reads this constraint file, so no step can swap the pinned torch for another multi-GB build.
constraints="$venv/autosam-constraints.txt"
{
    for requirement in ${AUTOSAM_TORCH_SPEC}; do
        case "$requirement" in
            torch==* | torchvision==*) echo "$requirement" ;;
        esac
    done
    echo "numpy<2"
    echo "pydicom<3"
    echo "dicomweb-client<0.60"
    echo "pynetdicom<3"
} >"$constraints"
export PIP_CONSTRAINT="$constraints"
# sam2, a monailabel requirement, compiles a CUDA extension unless SAM2_BUILD_CUDA is 0. The
# autosam app never calls sam2.
export SAM2_BUILD_CUDA=0

echo "setup_monailabel: installing ${AUTOSAM_TORCH_SPEC}"
python -m pip install --quiet --upgrade pip "setuptools>=61" wheel
# shellcheck disable=SC2086
python -m pip install --quiet ${AUTOSAM_TORCH_SPEC}

# sam2 ships only as source. Building it against the torch installed above (no build isolation)
# avoids unpacking a second copy of torch into a temporary build environment.
echo "setup_monailabel: building sam2 against the installed torch"
python -m pip install --quiet --no-build-isolation "sam2>=0.4.1"

echo "setup_monailabel: installing monailabel==${monailabel_version} and autosam (editable)"
python -m pip install --quiet "monailabel==${monailabel_version}" -e "$repo_root"

python - <<'PYTHON'
import monailabel
from monailabel.tasks.infer.bundle import BundleInferTask  # noqa: F401
from monailabel.tasks.train.bundle import BundleTrainTask  # noqa: F401

import autosam  # noqa: F401

print(f"setup_monailabel: monailabel {monailabel.__version__} and its bundle tasks import")
PYTHON

echo "$wanted" >"$stamp"
echo "setup_monailabel: done in $((SECONDS - start_seconds)) s"
