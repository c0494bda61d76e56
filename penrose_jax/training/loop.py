"""`run_training`: the resumable, NaN-guarded loop that alignment and Q&A fine-tuning share.

Determinism contract: the batch for update i is `batch_fn(i)` (a pure function of the data
seed and i) and the update's randomness is fold_in(state.rng, i). A run killed at any point and
restarted with the same arguments resumes from the latest checkpoint, truncates metrics.jsonl
to that step, and ends with the same params and the same metrics (timing keys aside) as a run
that was never interrupted.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any, Callable, Optional

import jax
import numpy as np
from tqdm import tqdm

from penrose_jax.training.checkpointing import TrainCheckpoints
from penrose_jax.training.metrics_log import MetricsLog
from penrose_jax.training.train_state import TrainState


class NonFiniteLossError(RuntimeError):
  """Raised when an update produced a non-finite loss or gradient (params left untouched)."""

  def __init__(self, message: str, step: int, last_good_checkpoint_step: Optional[int],
               checkpoint_directory: str):
    super().__init__(message)
    self.step = step
    self.last_good_checkpoint_step = last_good_checkpoint_step
    self.checkpoint_directory = checkpoint_directory


@dataclasses.dataclass
class TrainingResult:
  """What `run_training` returns.

  Attributes:
    state: the final TrainState.
    start_step: step the run started from (restored checkpoint step, or the input state's).
    final_step: number of completed updates.
    last_metrics: train metrics of the last update (floats).
    last_eval: last eval metrics (floats), or None.
    best_step: checkpoint step with the best `best_metric` (None when not tracked).
    best_eval: eval metrics of that step.
    train_tokens: tokens processed by this call (not counting restored steps).
    tokens_per_s: train_tokens / time spent in steps (compile included).
    tokens_per_s_steady: the same without this call's first update (which compiles).
    checkpoint_directory: where checkpoints are.
  """

  state: TrainState
  start_step: int
  final_step: int
  last_metrics: dict[str, float]
  last_eval: Optional[dict[str, float]]
  best_step: Optional[int]
  best_eval: Optional[dict[str, float]]
  train_tokens: int
  tokens_per_s: float
  tokens_per_s_steady: float
  checkpoint_directory: str


def _count_tokens(batch: Any) -> int:
  """Default token count: size of batch['tokens'] when present, else of the first int leaf."""
  if isinstance(batch, dict) and "tokens" in batch:
    return int(np.size(batch["tokens"]))
  for leaf in jax.tree_util.tree_leaves(batch):
    if np.issubdtype(np.asarray(leaf).dtype, np.integer):
      return int(np.size(leaf))
  return 0


def _floats(metrics: dict[str, Any]) -> dict[str, float]:
  """Device scalars -> Python floats."""
  return {k: float(v) for k, v in jax.device_get(metrics).items()}


def run_training(state: TrainState, train_step: Callable[[TrainState, Any], tuple],
                 batch_fn: Callable[[int], Any], num_steps: int, workdir: str, *,
                 eval_fn: Optional[Callable[[Any], dict]] = None, log_every: int = 10,
                 eval_every: int = 0, checkpoint_every: int = 100, max_to_keep: int = 2,
                 best_metric: Optional[str] = None, best_mode: str = "min",
                 tokens_in_batch: Callable[[Any], int] = _count_tokens, resume: bool = True,
                 progress: bool = True, async_checkpoints: bool = True,
                 checkpoint_at_end: bool = True) -> TrainingResult:
  """Trains until `num_steps` updates are done, resuming from `workdir` when possible.

  Per update i (0-based): batch = batch_fn(i); state, metrics, finite = train_step(state,
  batch). Every `log_every` updates (and at eval steps and the last one) one line goes to
  `workdir/metrics.jsonl` with 'step' = i + 1, the train metrics, 'tokens_per_s', 'wall_time',
  'elapsed_s' and, at eval steps, 'eval/<name>' values. Checkpoints (in
  `workdir/checkpoints`) are written every `checkpoint_every` updates, at every eval step (so
  the best one is on disk) and at the end.

  Args:
    state: initial TrainState (also the restore target when a checkpoint exists).
    train_step: (state, batch) -> (state, metrics, finite), e.g. from `make_train_step`
      (bind extra arguments with functools.partial). Its input state may be donated.
    batch_fn: i -> batch, deterministic in i.
    num_steps: total number of updates wanted (including restored ones).
    workdir: run directory.
    eval_fn: params -> dict of scalar metrics (validation), optional.
    log_every: logging interval in updates.
    eval_every: eval interval in updates (0 = only at the end when eval_fn is given).
    checkpoint_every: checkpoint interval in updates (0 = only at eval steps and the end).
    max_to_keep: most recent checkpoints kept.
    best_metric: eval metric key whose best checkpoint is kept (e.g. 'logit_kl').
    best_mode: 'min' or 'max'.
    tokens_in_batch: batch -> token count for throughput.
    resume: restore the latest checkpoint of `workdir` if there is one.
    progress: show a tqdm bar.
    async_checkpoints: write checkpoints in the background.
    checkpoint_at_end: also checkpoint after the last update (a caller that trains in pieces
      and checkpoints only some piece ends turns it off for the others).

  Returns:
    TrainingResult.

  Raises:
    NonFiniteLossError: an update had a non-finite loss or gradient; the message names the
      step and the last good checkpoint, which stays on disk.
  """
  os.makedirs(workdir, exist_ok=True)
  checkpoints = TrainCheckpoints(os.path.join(workdir, "checkpoints"), max_to_keep=max_to_keep,
                                 best_metric=best_metric, best_mode=best_mode,
                                 async_save=async_checkpoints)
  log = MetricsLog(os.path.join(workdir, "metrics.jsonl"))
  restored = checkpoints.restore_latest(state) if resume else None  # skips a corrupt latest
  if restored is not None:
    latest, state, meta = restored
    if int(meta.get("data_position", latest)) != int(state.step):
      raise ValueError(f"checkpoint {latest} has data position {meta.get('data_position')} but "
                       f"state step {int(state.step)}")
  start = int(state.step)
  log.truncate_after(start)

  last_metrics: dict[str, float] = {}
  last_eval: Optional[dict[str, float]] = None
  tokens_total, step_seconds = 0, 0.0
  first_tokens, first_seconds = 0, 0.0
  tokens_since_log, seconds_since_log = 0, 0.0
  t_start = time.time()
  bar = tqdm(total=num_steps, initial=start, disable=not progress, desc="train", leave=False)
  try:
    for i in range(start, num_steps):
      batch = batch_fn(i)
      t0 = time.perf_counter()
      state, metrics, finite = train_step(state, batch)
      finite = bool(finite)  # waits for the step; the guard needs it before going on
      dt = time.perf_counter() - t0
      if not finite:
        checkpoints.wait()
        good = checkpoints.latest_step()
        values = _floats(metrics)
        raise NonFiniteLossError(
            f"non-finite loss at step {i + 1} (batch_fn({i})): loss={values.get('loss')}, "
            f"grad_norm={values.get('grad_norm')}; params were not updated; last good "
            f"checkpoint is step {good} at {checkpoints.directory}", i + 1, good,
            checkpoints.directory)
      n_tokens = tokens_in_batch(batch)
      if i == start:
        first_tokens, first_seconds = n_tokens, dt
      tokens_total += n_tokens
      tokens_since_log += n_tokens
      step_seconds += dt
      seconds_since_log += dt
      bar.update(1)
      done = i + 1
      is_last = done == num_steps
      do_eval = eval_fn is not None and (is_last or (eval_every > 0 and done % eval_every == 0))
      do_log = is_last or do_eval or (log_every > 0 and done % log_every == 0)
      eval_metrics = None
      if do_eval:
        eval_metrics = _floats(eval_fn(state.params))
        last_eval = eval_metrics
      if do_log:
        last_metrics = _floats(metrics)
        record = {"step": done, **last_metrics,
                  "tokens_per_s": tokens_since_log / max(seconds_since_log, 1e-9),
                  "wall_time": time.time(), "elapsed_s": time.time() - t_start}
        if eval_metrics is not None:
          record.update({f"eval/{k}": v for k, v in eval_metrics.items()})
        log.append(record)
        bar.set_postfix(loss=f"{last_metrics['loss']:.4g}")
        tokens_since_log, seconds_since_log = 0, 0.0
      if ((is_last and checkpoint_at_end) or do_eval
          or (checkpoint_every > 0 and done % checkpoint_every == 0)):
        checkpoints.save(done, state, meta={"data_position": done}, eval_metrics=eval_metrics)
    if not last_metrics and start < num_steps:
      last_metrics = _floats(metrics)
    checkpoints.wait()
    best_step = checkpoints.best_step() if best_metric is not None else None
    best_eval = None
    if best_step is not None:
      best_eval = checkpoints.read_meta(best_step).get("eval")
  finally:
    bar.close()
    checkpoints.close()
  return TrainingResult(state=state, start_step=start, final_step=int(state.step),
                        last_metrics=last_metrics, last_eval=last_eval, best_step=best_step,
                        best_eval=best_eval, train_tokens=tokens_total,
                        tokens_per_s=tokens_total / max(step_seconds, 1e-9),
                        tokens_per_s_steady=(tokens_total - first_tokens)
                        / max(step_seconds - first_seconds, 1e-9),
                        checkpoint_directory=checkpoints.directory)
