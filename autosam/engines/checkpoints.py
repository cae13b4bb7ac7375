"""Checkpoint handlers that save and restore the trainer they are attached to, and a time budget.

MONAI's `CheckpointSaver` and `CheckpointLoader` take the trainer in their `save_dict` /
`load_dict`, but a bundle config cannot name the trainer inside the trainer's own handler list (the
reference would be circular). These subclasses add the engine they are attached to under
"trainer", so the config lists only the network, optimiser and scheduler.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from monai.handlers import CheckpointLoader, CheckpointSaver

from autosam.engines.utils import latest_checkpoint

__all__ = ["TrainerCheckpointSaver", "ResumeCheckpointLoader", "TrainingTimeLimit"]

logger = logging.getLogger(__name__)


class TrainerCheckpointSaver(CheckpointSaver):
    """`CheckpointSaver` whose checkpoints also hold the attached engine's state (epoch, iteration)."""

    def attach(self, engine: Any) -> None:
        """Add `engine` to the saved objects as "trainer", then attach as `CheckpointSaver` does."""
        self.save_dict["trainer"] = engine
        super().attach(engine)


class ResumeCheckpointLoader(CheckpointLoader):
    """Restore the newest `checkpoint_epoch=N.pt` of a folder into the network, optimiser, scheduler and trainer.

    Without such a file the run starts from epoch 0 with a warning, so the same command both
    starts and resumes a run.
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
                "resume is set but no checkpoint_epoch=N.pt found in '%s'; training starts at epoch 0",
                self.ckpt_dir,
            )
            return
        self.load_dict["trainer"] = engine
        logger.info("resuming from %s", self.load_path)
        super().attach(engine)


class TrainingTimeLimit:
    """Stop training at an epoch boundary when the next epoch would end past `limit_seconds`.

    The estimate of the next epoch is the duration of the last one, validation included, so a
    run stops after its last complete, validated and checkpointed epoch.
    """

    def __init__(self, *, limit_seconds: float | None, clock: str = "wall") -> None:
        """
        Args:
            limit_seconds: budget of the whole run in seconds; None or 0 never stops.
            clock: "wall" for wall-clock time, or "process" for the CPU time of this process
                (all threads), which compares runs fairly on a CPU that other jobs share.
        """
        if clock not in ("wall", "process"):
            raise ValueError(f"clock must be 'wall' or 'process', got {clock!r}")
        self.limit_seconds = float(limit_seconds) if limit_seconds else None
        self.clock = time.perf_counter if clock == "wall" else time.process_time
        self._start = 0.0
        self._epoch_start = 0.0

    def attach(self, engine: Any) -> None:
        """Check the budget after each epoch of `engine` (attach after validation and checkpoint handlers)."""
        from ignite.engine import Events

        if self.limit_seconds is None:
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _started(self, engine: Any) -> None:
        self._start = self.clock()

    def _epoch_started(self, engine: Any) -> None:
        self._epoch_start = self.clock()

    def _epoch_completed(self, engine: Any) -> None:
        now = self.clock()
        elapsed, last_epoch = now - self._start, now - self._epoch_start
        if elapsed + last_epoch > self.limit_seconds:
            logger.info(
                "stopping after epoch %d: %.0f s used, the next epoch (about %.0f s) would pass the %.0f s limit",
                engine.state.epoch,
                elapsed,
                last_epoch,
                self.limit_seconds,
            )
            engine.terminate()
