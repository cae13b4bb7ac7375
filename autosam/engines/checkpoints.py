"""Checkpoint handlers that save and restore the trainer they are attached to, for resuming a run.

MONAI's `CheckpointSaver` and `CheckpointLoader` take the trainer in their `save_dict` /
`load_dict`, but a bundle config cannot name the trainer inside the trainer's own handler list (the
reference would be circular). These subclasses add the engine they are attached to under
"trainer", so the config lists only the network, optimiser and scheduler.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from monai.handlers import CheckpointLoader, CheckpointSaver

from autosam.engines.utils import latest_checkpoint

__all__ = ["TrainerCheckpointSaver", "ResumeCheckpointLoader"]

logger = logging.getLogger(__name__)


class TrainerCheckpointSaver(CheckpointSaver):
    """`CheckpointSaver` whose checkpoints also hold the attached engine's state (epoch, iteration)."""

    def attach(self, engine: Any) -> None:
        """Add `engine` to the saved objects as "trainer", then attach as `CheckpointSaver` does."""
        self.save_dict["trainer"] = engine
        super().attach(engine)


class ResumeCheckpointLoader(CheckpointLoader):
    """Restore the newest `checkpoint_epoch=N.pt` of a folder into the network, optimiser, scheduler and trainer.

    Without such a file the run starts from epoch 0 and a warning says so, so the same command
    both starts and resumes a run.
    """

    def __init__(
        self,
        *,
        ckpt_dir: str | os.PathLike,
        load_dict: dict,
        map_location: Any = None,
        prefix: str = "checkpoint",
    ) -> None:
        """
        Args:
            ckpt_dir: folder that `TrainerCheckpointSaver` writes to.
            load_dict: objects to restore, e.g. {"model": network, "optimizer": ..., "lr_scheduler": ...}.
            map_location: device the checkpoint tensors are loaded onto.
            prefix: file name prefix of the interval checkpoints.
        """
        self.ckpt_dir = ckpt_dir
        load_path = latest_checkpoint(ckpt_dir, prefix)
        super().__init__(load_path=load_path or "", load_dict=load_dict, map_location=map_location)

    def attach(self, engine: Any) -> None:
        """Restore the trainer too, at the start of `engine.run()`, when a checkpoint exists."""
        if not self.load_path:
            logger.warning(
                "resume is set but '%s' holds no checkpoint_epoch=N.pt; training starts at epoch 0",
                self.ckpt_dir,
            )
            return
        self.load_dict["trainer"] = engine
        logger.info("resuming from %s", self.load_path)
        super().attach(engine)
