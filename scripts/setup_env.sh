#!/usr/bin/env bash
# Create .venv (if missing) and install autosam into it.
#
# Usage: bash scripts/setup_env.sh [EXTRAS]      e.g. EXTRAS=dev
#
# torch and torchvision are pinned per platform because a looser requirement makes pip pull a
# different multi-GB build on a fresh machine. Users with another CUDA set AUTOSAM_TORCH_SPEC, e.g.
#   AUTOSAM_TORCH_SPEC="torch==2.5.1 torchvision==0.20.1 --index-url https://download.pytorch.org/whl/cu121"
# AUTOSAM_VENV selects another environment folder (default: .venv in the repository root).
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
extras="${1:-}"
venv="${AUTOSAM_VENV:-$repo_root/.venv}"
python_bin="${PYTHON:-python3}"

# The torch pin per machine lives in one place, shared with scripts/setup_monailabel.sh.
# shellcheck source=scripts/torch_spec.sh
source "$repo_root/scripts/torch_spec.sh" setup_env

if [[ ! -x "$venv/bin/python" ]]; then
    echo "setup_env: creating $venv"
    "$python_bin" -m venv "$venv"
fi
# shellcheck disable=SC1091
source "$venv/bin/activate"

# Reinstall only when the requirements or the torch pin changed, or when extras are requested that
# the last install did not include. An install with the dev extras also serves a plain request, so
# alternating scripts/demo.sh and scripts/test.sh does not reinstall each time.
stamp="$venv/.autosam-installed"
requirements="$(cat "$repo_root/setup.cfg" "$repo_root/pyproject.toml" | sha256sum | cut -c1-16) ${AUTOSAM_TORCH_SPEC}"
wanted="$requirements [${extras}]"
if [[ -f "$stamp" ]]; then
    installed="$(cat "$stamp")"
    if [[ "$installed" == "$wanted" ]] || { [[ -z "$extras" ]] && [[ "$installed" == "$requirements ["* ]]; }; then
        echo "setup_env: $venv is up to date"
        exit 0
    fi
fi

echo "setup_env: installing ${AUTOSAM_TORCH_SPEC}"
python -m pip install --quiet --upgrade pip
# shellcheck disable=SC2086
python -m pip install --quiet ${AUTOSAM_TORCH_SPEC}

target="$repo_root"
if [[ -n "$extras" ]]; then
    target="$repo_root[$extras]"
fi
echo "setup_env: installing autosam${extras:+[$extras]} in editable mode"
python -m pip install --quiet -e "$target"

echo "$wanted" >"$stamp"
echo "setup_env: done"
