#!/usr/bin/env bash
# Main job: train AutoSAM with the MONAI bundle, validate every epoch, keep the best checkpoint,
# evaluate it with the SUN-SEG metric suite, write predictions and overlays, print the metric table.
#
# Usage:
#   bash scripts/demo.sh
#       No data given: 2D slices of the MNI152 T1 template with its white-matter map, which ship
#       inside the nilearn package, a tiny randomly initialised SAM and a resnet18 encoder on the
#       CPU (about 10 minutes on 2 cores: training stops after at most 30 epochs or when the next
#       epoch would end past 7 minutes, DEMO_TRAIN_SECONDS=420).
#   bash scripts/demo.sh --dataset_dir DIR --layout flat|pranet|sun-seg \
#       [--sam_checkpoint FILE --sam_model_type vit_b|vit_l|vit_h] [--max_epochs N] [--run_dir DIR]
#       The same job on your data. With a SAM checkpoint the job uses configs/paper_polyp.json
#       (SAM vit_b, HarDNet-85 g at 352 px, Adam 3e-4), otherwise configs/cpu_demo.json.
#
# Everything goes to --run_dir (default runs/demo): models/ (checkpoints), train/ (TensorBoard
# logs, training_history.csv), eval/ (metrics.json, per_case.csv, predictions/ with
# probabilities/, masks/ and overlays/). Set-up: .venv is created and filled when missing.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

dataset_dir=""
layout="flat"
sam_checkpoint=""
sam_model_type=""
max_epochs=""
run_dir="$repo_root/runs/demo"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --dataset_dir) dataset_dir="$2"; shift 2 ;;
        --layout) layout="$2"; shift 2 ;;
        --sam_checkpoint) sam_checkpoint="$2"; shift 2 ;;
        --sam_model_type) sam_model_type="$2"; shift 2 ;;
        --max_epochs) max_epochs="$2"; shift 2 ;;
        --run_dir) run_dir="$2"; shift 2 ;;
        -h | --help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "demo: unknown option '$1'; see 'bash scripts/demo.sh --help'" >&2; exit 2 ;;
    esac
done

bash scripts/setup_env.sh
# shellcheck disable=SC1091
source "${AUTOSAM_VENV:-$repo_root/.venv}/bin/activate"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
export PYTHONUNBUFFERED=1

run_dir="$(python -c 'import os, sys; print(os.path.abspath(sys.argv[1]))' "$run_dir")"
if [[ -e "$run_dir/eval" ]]; then
    echo "demo: '$run_dir/eval' exists and predictions are never overwritten; remove it or pass --run_dir" >&2
    exit 1
fi
mkdir -p "$run_dir"

configs=("$repo_root/bundle/configs/train.json")
overrides=()
if [[ -z "$dataset_dir" ]]; then
    echo "demo: no --dataset_dir given; preparing MNI152 slices from the installed nilearn package"
    dataset_dir="$run_dir/mni152_slices"
    python -m autosam.engines.demo_data "$dataset_dir" >/dev/null
    overrides+=(--datalist "$dataset_dir/datalist.json")
    eval_split="test"
    max_epochs="${max_epochs:-30}"
    # Training stops at the epoch boundary before this wall-clock budget, so the whole job takes
    # about 10 minutes on a slow or shared machine too.
    overrides+=(--time_limit_seconds "${DEMO_TRAIN_SECONDS:-420}")
else
    overrides+=(--layout "$layout")
    eval_split="validation"
fi

if [[ -n "$sam_checkpoint" ]]; then
    configs+=("$repo_root/configs/paper_polyp.json")
    overrides+=(--sam_checkpoint "$sam_checkpoint" --sam_model_type "${sam_model_type:-vit_b}")
else
    configs+=("$repo_root/configs/cpu_demo.json")
fi
if [[ -n "$max_epochs" ]]; then
    overrides+=(--max_epochs "$max_epochs")
fi

config_list="[$(printf "'%s'," "${configs[@]}")]"
eval_config_list="[$(printf "'%s'," "${configs[0]}" "$repo_root/bundle/configs/evaluate.json" "${configs[@]:1}")]"
common=(--dataset_dir "$dataset_dir" --ckpt_dir "$run_dir/models" "${overrides[@]}")

echo "demo: training (configs $config_list)"
python -m monai.bundle run --config_file "$config_list" "${common[@]}" \
    --output_dir "$run_dir/train" --progress_bar false

echo "demo: evaluating $run_dir/models/model.pt on the '$eval_split' split"
python -m monai.bundle run --config_file "$eval_config_list" "${common[@]}" \
    --output_dir "$run_dir/eval" --eval_split "$eval_split" --write_overlays true

python - "$run_dir" <<'PY'
import json
import sys
from pathlib import Path

from autosam.engines import format_metric_table

run_dir = Path(sys.argv[1])
report = json.loads((run_dir / "eval" / "metrics.json").read_text())
print(f"\nAutoSAM on {report['frames']} frames ({report['cases']} cases), checkpoint {report['checkpoint']}")
print(format_metric_table(report["overall"]))
print(f"\nper-case values: {run_dir / 'eval' / 'per_case.csv'}")
print(f"overlays:        {run_dir / 'eval' / 'predictions' / 'overlays'}")
print(f"training curve:  {run_dir / 'train' / 'training_history.csv'}")
PY
