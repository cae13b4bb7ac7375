#!/usr/bin/env bash
# Sourced by the set-up scripts: sets AUTOSAM_TORCH_SPEC, the pip requirement of the torch and
# torchvision build pinned for this machine, unless the caller set it already.
#
# Usage: source scripts/torch_spec.sh PREFIX    (PREFIX starts the error message, e.g. setup_env)
#
# A looser requirement makes pip pull a different multi-GB build on a fresh machine. Users with
# another CUDA set AUTOSAM_TORCH_SPEC, e.g.
#   AUTOSAM_TORCH_SPEC="torch==2.5.1 torchvision==0.20.1 --index-url https://download.pytorch.org/whl/cu121"

if [[ -z "${AUTOSAM_TORCH_SPEC:-}" ]]; then
    case "$(uname -m)" in
        x86_64) AUTOSAM_TORCH_SPEC="torch==2.14.1 torchvision==0.29.1" ;;
        aarch64 | arm64) AUTOSAM_TORCH_SPEC="torch==2.9.1 torchvision==0.24.1" ;;
        *)
            echo "${1:-autosam}: no pinned torch build for machine '$(uname -m)'; set AUTOSAM_TORCH_SPEC" >&2
            exit 1
            ;;
    esac
fi
