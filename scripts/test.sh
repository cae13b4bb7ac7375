#!/usr/bin/env bash
# Set up .venv with the dev extras (if needed) and run the whole test suite.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k metrics -x`.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

bash scripts/setup_env.sh dev
# MONAI Label lives in its own environment (.venv-monailabel, pinned to pydicom<3 and numpy<2) and its
# DICOMweb tests need Orthanc; both scripts return at once when everything is installed already.
bash scripts/setup_monailabel.sh
bash scripts/setup_orthanc.sh
export AUTOSAM_MONAILABEL_VENV="${AUTOSAM_MONAILABEL_VENV:-$repo_root/.venv-monailabel}"
# shellcheck disable=SC1091
source "${AUTOSAM_VENV:-$repo_root/.venv}/bin/activate"

# The real data sets live beside the checkout and are never copied into it.
export AUTOSAM_SHARED_DATA="${AUTOSAM_SHARED_DATA:-$repo_root/../shared/data}"
export AUTOSAM_SHARED_CASES="${AUTOSAM_SHARED_CASES:-$repo_root/../shared/cases}"
export PYTHONUNBUFFERED=1
# Two cores here; more threads than cores only slows torch down.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"

python -m pytest "$@"
