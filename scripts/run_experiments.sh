#!/usr/bin/env bash
# Real runs of the bundle on CPU: AutoSAM (tiny SAM), the light stage 2 (g + h) and a MONAI
# BasicUNet baseline. AutoSAM and BasicUNet train on Kvasir-SEG for the same CPU-time budget.
# Each model is then evaluated on the Kvasir-SEG validation split, on CVC-ClinicDB (unseen) and on
# CVC-ClinicDB video sequences (SUN-SEG layout, also with the official protocol of
# `python -m autosam.evaluate`).
#
# Usage: bash scripts/run_experiments.sh [RUN_DIR]     (default runs/experiments)
# Environment: AUTOSAM_SHARED_DATA (default ../shared/data beside the checkout),
#   TRAIN_SECONDS (default 240 CPU seconds per model), LIGHT_SECONDS (default 120). Budgets are CPU
#   time of the training process (validation included, dataset caching excluded), so runs compare
#   fairly on a CPU that other jobs share.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"
# shellcheck disable=SC1091
source "${AUTOSAM_VENV:-$repo_root/.venv}/bin/activate"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export PYTHONUNBUFFERED=1

data="$(cd "${AUTOSAM_SHARED_DATA:-$repo_root/../shared/data}" && pwd)"
run_dir="$(mkdir -p "${1:-$repo_root/runs/experiments}" && cd "${1:-$repo_root/runs/experiments}" && pwd)"
train_seconds="${TRAIN_SECONDS:-240}"
light_seconds="${LIGHT_SECONDS:-120}"
configs="$repo_root/bundle/configs"
cpu_demo="$repo_root/configs/cpu_demo.json"

bundle() {  # bundle LOG CONFIG_LIST ARGS...
    local log="$1"
    shift
    echo "run_experiments: $(date +%T) $log"
    python -m monai.bundle run --config_file "$@" --progress_bar False >"$run_dir/$log.log" 2>&1
}

train() {  # train NAME EXTRA_CONFIG_LIST SECONDS ARGS...
    local name="$1" extra="$2" seconds="$3"
    shift 3
    bundle "$name-train" "['$configs/train.json',$extra'$cpu_demo','$repo_root/configs/kvasir_seg.json']" \
        --dataset_dir "$data/kvasir_seg" --ckpt_dir "$run_dir/$name/models" --output_dir "$run_dir/$name/train" \
        --max_epochs 100 --time_limit_seconds "$seconds" --time_limit_clock process "$@"
}

evaluate() {  # evaluate NAME EXTRA_CONFIG_LIST ARGS...
    local name="$1" extra="$2"
    shift 2
    bundle "$name-eval-kvasir" "['$configs/train.json',$extra'$configs/evaluate.json','$cpu_demo','$repo_root/configs/kvasir_seg.json']" \
        --dataset_dir "$data/kvasir_seg" --ckpt_dir "$run_dir/$name/models" \
        --output_dir "$run_dir/$name/eval_kvasir_val" --eval_split validation "$@"
    bundle "$name-eval-cvc" "['$configs/train.json',$extra'$configs/evaluate.json','$cpu_demo','$repo_root/configs/cvc_clinicdb_unseen.json']" \
        --dataset_dir "$data/cvc_clinicdb" --ckpt_dir "$run_dir/$name/models" \
        --output_dir "$run_dir/$name/eval_cvc_clinicdb" --write_overlays True "$@"
    bundle "$name-eval-video" "['$configs/train.json',$extra'$configs/evaluate.json','$cpu_demo','$repo_root/configs/cvc_clinicdb_unseen.json']" \
        --dataset_dir "$data/cvc_clinicdb_video" --layout sun-seg --ckpt_dir "$run_dir/$name/models" \
        --output_dir "$run_dir/$name/eval_cvc_video" "$@"
    python -m autosam.evaluate "$run_dir/$name/eval_cvc_video/predictions/probabilities/Frame" \
        "$data/cvc_clinicdb_video/GT" --layout sun-seg \
        --output "$run_dir/$name/eval_cvc_video/official/results.json" >"$run_dir/$name-official-video.log" 2>&1
}

baseline="'$repo_root/configs/baseline_basicunet.json',"
light="'$configs/light.json',"

train autosam "" "$train_seconds"
evaluate autosam ""

train light "$light" "$light_seconds" --encoder_checkpoint "$run_dir/autosam/models/model.pt"
evaluate light "$light" --encoder_checkpoint "$run_dir/autosam/models/model.pt"

train basicunet "$baseline" "$train_seconds"
evaluate basicunet "$baseline"

python scripts/plot_curves.py "$run_dir" --output "$run_dir/curves.png"
python scripts/plot_curves.py "$run_dir" --summary_only >"$run_dir/summary.md"
cat "$run_dir/summary.md"
