"""MONAI Label integration: an app that serves the autosam bundle for 2D pictures and slices of volumes.

`app`, `infer` and `train` import monailabel, which installs into its own environment
(`bash scripts/setup_monailabel.sh`); `app_dir` and `volumes` need only MONAI. Nothing is imported
here, so `import autosam.monailabel` works in both environments.
"""

from __future__ import annotations

__all__: list[str] = []
