"""Shared fixtures: where the real data sets and the hard cases lie.

The data sets stay beside the checkout (their licences forbid copying them into the repository);
`scripts/test.sh` exports their paths. A missing folder fails the test that needs it, because a
silently skipped data test would hide a broken checkout.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


def _shared_path(variable: str, default: Path) -> Path:
    path = Path(os.environ.get(variable, default)).resolve()
    if not path.is_dir():
        pytest.fail(f"{variable}={path} is not a folder; point it at the shared data beside the checkout")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Root of the real data sets (`kvasir_seg/`, `cvc_clinicdb/`, ...)."""
    return _shared_path("AUTOSAM_SHARED_DATA", REPO_ROOT.parent / "shared" / "data")


@pytest.fixture(scope="session")
def shared_cases() -> Path:
    """Root of the hard input cases, each folder with an `expected.json`."""
    return _shared_path("AUTOSAM_SHARED_CASES", REPO_ROOT.parent / "shared" / "cases")
