"""Orbax checkpoints of a TrainState: keep the latest few plus the best by a validation metric.

Layout: `<directory>/<step>/state` (the TrainState pytree, StandardSave) and
`<directory>/<step>/meta` (JSON: step, data position, eval metrics). Restoring uses the caller's
current state as the target structure, so custom pytree nodes (compressed-leaf dataclasses,
optax states) come back as the same classes with their static fields.
"""

from __future__ import annotations

import logging
import os
import shutil
from typing import Any, Optional

import jax
import orbax.checkpoint as ocp
from orbax.checkpoint import checkpoint_managers


class _DropMissingMetricsWarning(logging.Filter):
  """Orbax warns on every save without metrics; saves between evaluations have none."""

  def filter(self, record: logging.LogRecord) -> bool:
    return "did not provide metrics" not in record.getMessage()


logging.getLogger("absl").addFilter(_DropMissingMetricsWarning())


class TrainCheckpoints:
  """Saves/restores TrainStates with an `ocp.CheckpointManager`.

  Retention: the `max_to_keep` most recent checkpoints, plus (when `best_metric` is set) the
  `keep_best` checkpoints with the best value of that eval metric; checkpoints saved without
  eval metrics are never considered for "best".
  """

  def __init__(self, directory: str, max_to_keep: int = 2, best_metric: Optional[str] = None,
               best_mode: str = "min", keep_best: int = 1, async_save: bool = True):
    """Opens (or creates) a checkpoint directory.

    Args:
      directory: where step folders live.
      max_to_keep: number of most recent checkpoints kept.
      best_metric: eval metric name used to keep the best checkpoint(s); None = no tracking.
      best_mode: 'min' or 'max'.
      keep_best: number of best checkpoints kept in addition to the latest ones.
      async_save: write in a background thread (arrays are copied to host before `save`
        returns, so the state may be donated right after).
    """
    self.directory = os.path.abspath(directory)
    self.best_metric = best_metric
    policies = [checkpoint_managers.LatestN(n=max_to_keep)]
    best_fn = None
    if best_metric is not None:
      best_fn = lambda metrics: float(metrics[best_metric])
      policies.append(checkpoint_managers.BestN(
          get_metric_fn=best_fn, reverse=(best_mode == "min"), n=keep_best,
          keep_checkpoints_without_metrics=False))
    options = ocp.CheckpointManagerOptions(
        preservation_policy=checkpoint_managers.AnyPreservationPolicy(policies),
        best_fn=best_fn, best_mode=best_mode, create=True,
        enable_async_checkpointing=async_save)
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> Optional[int]:
    """Returns the newest saved step, or None."""
    return self._manager.latest_step()

  def best_step(self) -> Optional[int]:
    """Returns the step with the best eval metric (the latest when no metric is tracked)."""
    if self.best_metric is None:
      return self.latest_step()
    return self._manager.best_step()

  def all_steps(self) -> list[int]:
    """Returns every step currently on disk, ascending."""
    return sorted(self._manager.all_steps())

  def step_directory(self, step: int) -> str:
    """Returns the folder of one step's checkpoint."""
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state: Any, meta: Optional[dict] = None,
           eval_metrics: Optional[dict] = None) -> None:
    """Writes one checkpoint (always, regardless of interval policies).

    Args:
      step: the step number (folder name).
      state: the TrainState (any pytree).
      meta: JSON-serialisable extras (data position, ...).
      eval_metrics: eval metrics of this exact state; needed for best tracking.
    """
    meta = dict(meta or {})
    meta["step"] = int(step)
    if eval_metrics is not None:
      eval_metrics = {k: float(v) for k, v in eval_metrics.items()}
      meta["eval"] = eval_metrics
    self._manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                     meta=ocp.args.JsonSave(meta)),
                       metrics=eval_metrics, force=True)

  def restore(self, step: int, target: Any) -> tuple[Any, dict]:
    """Reads one checkpoint into the structure (and shardings) of `target`.

    Args:
      step: which step.
      target: a state with the right tree structure (concrete or ShapeDtypeStruct leaves).

    Returns:
      (state, meta).
    """
    abstract = jax.tree_util.tree_map(ocp.utils.to_shape_dtype_struct, target)
    restored = self._manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract),
                                      meta=ocp.args.JsonRestore()))
    return restored.state, dict(restored.meta)

  def restore_latest(self, target: Any) -> Optional[tuple[int, Any, dict]]:
    """Restores the newest readable checkpoint, falling back to older ones when it is corrupt.

    An unreadable step folder (truncated or garbled file, interrupted copy) is logged with a
    warning naming the step and moved aside to `<step>.corrupt` (so a later save of the same
    step does not collide with it), and the previous step is tried.

    Args:
      target: a state with the right tree structure (see `restore`).

    Returns:
      (step, state, meta) of the checkpoint restored, or None when there is none.

    Raises:
      ValueError: checkpoints exist but none of them can be read (the folder is named).
    """
    steps = self.all_steps()
    for step in reversed(steps):
      try:
        state, meta = self.restore(step, target)
      except Exception as err:  # orbax raises many types (ValueError, OSError, tensorstore...)
        moved = self.step_directory(step) + ".corrupt"
        logging.warning("checkpoint step %d in %s cannot be restored (%s: %s); moved it to %s "
                        "and falling back to the previous checkpoint", step, self.directory,
                        type(err).__name__, str(err)[:300], moved)
        shutil.rmtree(moved, ignore_errors=True)
        os.replace(self.step_directory(step), moved)
        self._manager.reload()
        continue
      return step, state, meta
    if steps:
      raise ValueError(f"{self.directory}: none of the checkpoints {steps} can be restored "
                       "(see the warnings above); move the folder away to start over")
    return None

  def read_meta(self, step: int) -> dict:
    """Reads only the JSON meta of one checkpoint.

    Args:
      step: which step.

    Returns:
      The meta dict ('step', 'data_position', optional 'eval').
    """
    restored = self._manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return dict(restored.meta)

  def wait(self) -> None:
    """Blocks until background writes are finished."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Finishes writes and releases the manager."""
    self._manager.close()
