"""Distribution alignment: train the compressed model's stored parameters to match the dense one.

The student (compressed params tree) is trained with `combined_objective` against the teacher
(original dense params): by default forward KL on logits only (on SmolLM2-135M the preprint's
feature-softmax hidden-state KL made the model worse alone and worse than logit KL added to it;
README, sweep_alignment); hidden_kl, mse, js and ce are weights away. Teacher activations are
computed on the fly inside the jitted step (teacher params are a step argument, not a
closed-over constant, and get no gradient), or read from a `TeacherCache` for a fixed
calibration set.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from penrose_jax.alignment import losses
from penrose_jax.compression.packing import pack_compressed, unpack_compressed
from penrose_jax.alignment.teacher_cache import (TeacherCache, logits_from_final_hidden,
                                                 teacher_head_params, tokens_fingerprint)
from penrose_jax.models import llama
from penrose_jax.models.config import ModelConfig
from penrose_jax.models.linear import dense_equivalent
from penrose_jax.models.token_loss import masked_token_mean
from penrose_jax.reporting.stage_timer import StageTimer, maybe_stage
from penrose_jax.parallel.placement import place_batch
from penrose_jax.training.checkpointing import TrainCheckpoints
from penrose_jax.training.data_order import batch_indices
from penrose_jax.training.loop import run_training
from penrose_jax.training.optimizer import OptimizerConfig, make_optimizer, make_schedule
from penrose_jax.training.train_state import LossFn, init_train_state, make_train_step
from penrose_jax.training.trainable import describe_trainable, trainable_mask


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
  """Which alignment terms, with what weights.

  Attributes:
    weights: term -> weight, terms from `losses.OBJECTIVE_TERMS` (logit_kl, hidden_kl, mse,
      ce, js). Given as a tuple of pairs so the config stays hashable.
    temperature: temperature of logit terms (logit_kl is T^2-scaled).
    hidden_temperature: temperature of the hidden-state softmax (None = `temperature`).
    layers: hidden-state layers for hidden_kl/mse (negative allowed); None = all layers.
    layer_weights: optional weight per selected layer.
  """

  weights: tuple[tuple[str, float], ...] = (("logit_kl", 1.0), ("hidden_kl", 0.0))
  temperature: float = 1.0
  hidden_temperature: Optional[float] = None
  layers: Optional[tuple[int, ...]] = None
  layer_weights: Optional[tuple[float, ...]] = None

  def __post_init__(self):
    # Accept dicts/lists (e.g. from ConfigDicts) but store hashable tuples: the config keys the
    # compiled-step cache.
    weights = self.weights.items() if isinstance(self.weights, Mapping) else self.weights
    object.__setattr__(self, "weights", tuple((str(k), float(v)) for k, v in weights))
    for name in ("layers", "layer_weights"):
      value = getattr(self, name)
      if value is not None:
        object.__setattr__(self, name, tuple(value))
    unknown = sorted(set(dict(self.weights)) - set(losses.OBJECTIVE_TERMS))
    if unknown:
      raise ValueError(f"unknown objective terms {unknown}; expected some of "
                       f"{losses.OBJECTIVE_TERMS}")

  def weight_dict(self) -> dict[str, float]:
    """Returns the weights as a dict."""
    return dict(self.weights)


@dataclasses.dataclass(frozen=True)
class AlignmentConfig:
  """Hyper-parameters of `align`.

  Attributes:
    objective: loss terms.
    optimizer: AdamW/schedule settings; total_steps <= 0 means `num_steps`.
    trainable: selector for `trainable_mask` ('compressed', 'compressed+norms', 'all', regex).
    num_steps: updates to run (total, including resumed ones).
    batch_size: windows per update.
    seed: data order and init seed.
    log_every, eval_every, checkpoint_every: intervals in updates (eval_every 0 = end only).
    max_to_keep: most recent checkpoints kept (plus the best by `best_metric`).
    best_metric: validation metric used to keep/choose the best checkpoint.
    restore_best: return the best checkpoint's params instead of the last ones.
    eval_batch_size: windows per validation forward.
    progress: tqdm bar.
  """

  objective: ObjectiveConfig = ObjectiveConfig()
  optimizer: OptimizerConfig = OptimizerConfig(learning_rate=1e-4, warmup_steps=10,
                                               total_steps=0, weight_decay=0.0, clip_norm=1.0)
  trainable: str = "compressed"
  num_steps: int = 200
  batch_size: int = 8
  seed: int = 0
  log_every: int = 10
  eval_every: int = 50
  checkpoint_every: int = 50
  max_to_keep: int = 2
  best_metric: str = "logit_kl"
  restore_best: bool = True
  eval_batch_size: int = 8
  progress: bool = True


def _teacher_outputs(batch: dict, teacher: Any, config: ModelConfig,
                     layers: Optional[Sequence[int]]) -> dict[str, jax.Array]:
  """Teacher logits and selected hidden states, from the cache fields or a forward pass."""
  teacher = jax.lax.stop_gradient(teacher)
  if "teacher_final_hidden" in batch:  # cached: `teacher` is only the LM head subtree
    logits = logits_from_final_hidden(teacher, jnp.asarray(batch["teacher_final_hidden"]), config)
    return {"logits": logits, "hidden_states": jnp.asarray(batch["teacher_hidden"])}
  out = llama.forward(teacher, batch["tokens"], config, return_hidden=True)
  hidden = out.hidden_states if layers is None else out.hidden_states[jnp.asarray(layers)]
  return {"logits": out.logits, "hidden_states": hidden}


def make_alignment_loss(model_config: ModelConfig, objective: ObjectiveConfig) -> LossFn:
  """Builds the alignment loss for `make_train_step`.

  The teacher is the `constants` argument of the loss (and of the train step): the full
  teacher params, or, when batches carry cached activations ('teacher_hidden' for the
  objective's layers and 'teacher_final_hidden', see TeacherCache.batch), just
  `teacher_head_params(teacher)`. Passing the teacher as an argument rather than closing over
  it keeps gigabytes of weights out of the compiled program.

  Args:
    model_config: the architecture (teacher and student share it).
    objective: terms and weights.

  Returns:
    loss_fn(student_params, batch, rng, teacher) -> (loss, terms), batch = {'tokens': (B, T)
    int32, optional 'mask': (B, T), optional cached teacher fields}.
  """
  weights = objective.weight_dict()
  layers = objective.layers

  def loss_fn(student_params, batch, rng, teacher):
    del rng
    tokens = batch["tokens"]
    mask = batch.get("mask")
    student = llama.forward(student_params, tokens, model_config, return_hidden=True)
    hidden = student.hidden_states
    if layers is not None:
      hidden = hidden[jnp.asarray(layers)]
    teacher_out = _teacher_outputs(batch, teacher, model_config, layers)
    return losses.combined_objective(
        teacher_out, {"logits": student.logits, "hidden_states": hidden}, tokens, mask, weights,
        objective.temperature, None, objective.layer_weights, objective.hidden_temperature)

  return loss_fn


@functools.lru_cache(maxsize=8)
def _eval_batch_sums(model_config: ModelConfig, layers: Optional[tuple[int, ...]],
                     layer_weights: Optional[tuple[float, ...]], h_temp: float) -> Callable:
  """Jitted per-batch metric sums (memoised so repeated evals/aligns compile once)."""

  @jax.jit
  def batch_sums(student, teacher, tokens, row_mask):
    t_out = llama.forward(teacher, tokens, model_config, return_hidden=True)
    s_out = llama.forward(student, tokens, model_config, return_hidden=True)
    mask = jnp.broadcast_to(row_mask[:, None], tokens.shape).astype(jnp.float32)
    count = jnp.sum(mask)
    _, h_kl = losses.hidden_kl_per_layer(t_out.hidden_states, s_out.hidden_states, layers,
                                         layer_weights, h_temp, mask)
    agree = (jnp.argmax(t_out.logits, -1) == jnp.argmax(s_out.logits, -1)).astype(jnp.float32)
    means = {"logit_kl": losses.logit_kl(t_out.logits, s_out.logits, 1.0, mask, False),
             "hidden_kl": h_kl, "js": losses.js_divergence(t_out.logits, s_out.logits, 1.0, mask),
             "top1_agreement": masked_token_mean(agree, mask)}
    # The student's own next-token NLL per row: held-out perplexity during training.
    logp = jax.nn.log_softmax(s_out.logits[:, :-1].astype(jnp.float32), axis=-1)
    token_logp = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]
    row_nll = -jnp.sum(token_logp, axis=1) * row_mask
    return {k: v * count for k, v in means.items()}, count, row_nll

  return batch_sums


def make_alignment_eval(teacher_params: Any, model_config: ModelConfig, token_windows: np.ndarray,
                        objective: ObjectiveConfig, batch_size: int = 8,
                        groups: Optional[Sequence[str]] = None
                        ) -> Callable[[Any], dict[str, float]]:
  """Validation metrics of a student against the teacher on held-out windows.

  Args:
    teacher_params: dense teacher params.
    model_config: the architecture.
    token_windows: (N, T) int windows.
    objective: supplies the layers and hidden temperature of 'hidden_kl'.
    batch_size: windows per forward (the last batch is padded and masked: one compile).
    groups: optional name per window (e.g. its text set): adds the student's perplexity per
      group as 'ppl_<name>'.

  Returns:
    eval_fn(student_params) -> {'logit_kl' (T=1, forward KL), 'hidden_kl' (objective's layers),
    'js', 'top1_agreement', 'ppl' (the student's own next-token perplexity)} averaged over all
    tokens, plus 'ppl_<group>' per group.
  """
  windows = np.asarray(token_windows, np.int32)
  if groups is not None and len(groups) != windows.shape[0]:
    raise ValueError(f"groups has {len(groups)} names for {windows.shape[0]} windows")
  batch_sums = _eval_batch_sums(model_config, objective.layers, objective.layer_weights,
                                objective.hidden_temperature or objective.temperature)

  def eval_fn(student_params):
    # The dense-equivalent tree runs the dense compiled forward: compiling the metrics on the
    # packed compressed tree took 87 s for SmolLM2, materializing it once ~25 s. Unpacking
    # on the host first gives the materialization the unpacked tree structure, which the
    # job's perplexities already compiled (a packed tree compiled a second program).
    student_params = dense_equivalent(unpack_compressed(student_params))
    totals, total_count = {}, 0.0
    row_nll = []
    for start in range(0, windows.shape[0], batch_size):
      chunk = windows[start:start + batch_size]
      real = chunk.shape[0]
      row_mask = np.arange(batch_size) < real
      if real < batch_size:
        chunk = np.concatenate([chunk, np.repeat(chunk[:1], batch_size - real, axis=0)])
      chunk, row_mask = place_batch((chunk, row_mask))
      sums, count, nll = jax.device_get(batch_sums(student_params, teacher_params, chunk,
                                                   row_mask))
      total_count += float(count)
      row_nll.extend(np.asarray(nll, np.float64)[:real].tolist())
      for k, v in sums.items():
        totals[k] = totals.get(k, 0.0) + float(v)
    out = {k: v / max(total_count, 1.0) for k, v in totals.items()}
    predicted = windows.shape[1] - 1  # next-token targets per window
    out["ppl"] = math.exp(sum(row_nll) / max(len(row_nll) * predicted, 1))
    for name in sorted(set(groups or ())):
      rows = [v for v, g in zip(row_nll, groups) if g == name]
      out[f"ppl_{name}"] = math.exp(sum(rows) / (len(rows) * predicted))
    return out

  return eval_fn


def _resolved_optimizer(config: AlignmentConfig) -> OptimizerConfig:
  """Optimizer config with total_steps defaulting to num_steps."""
  if config.optimizer.total_steps > 0:
    return config.optimizer
  return dataclasses.replace(config.optimizer, total_steps=config.num_steps)


@functools.lru_cache(maxsize=4)
def _alignment_step(model_config: ModelConfig, objective: ObjectiveConfig,
                    opt_config: OptimizerConfig, mask_def: Any, mask_leaves: tuple[bool, ...]):
  """(optimizer, jitted train step), memoised on hashable settings: a resumed or repeated
  `align` in the same process reuses the compiled step."""
  mask = jax.tree_util.tree_unflatten(mask_def, mask_leaves)
  optimizer = make_optimizer(opt_config)
  step = make_train_step(make_alignment_loss(model_config, objective), optimizer, mask,
                         make_schedule(opt_config))
  return optimizer, step


def align(student_params: Any, teacher_params: Any, model_config: ModelConfig,
          token_windows_train: np.ndarray, token_windows_val: np.ndarray,
          config: AlignmentConfig, workdir: str,
          teacher_cache: Optional[TeacherCache] = None,
          timer: Optional[StageTimer] = None,
          val_groups: Optional[Sequence[str]] = None) -> tuple[Any, dict[str, Any]]:
  """Aligns a compressed student to its dense teacher; resumable from `workdir`.

  Args:
    student_params: compressed params tree (compressed leaves at some kernels).
    teacher_params: the original dense params.
    model_config: shared architecture.
    token_windows_train: (N, T) int training windows; update i uses rows
      `batch_indices(i, batch_size, N, seed)`.
    token_windows_val: (M, T) held-out windows for validation metrics.
    config: AlignmentConfig.
    workdir: run folder (checkpoints/, metrics.jsonl); rerunning with the same arguments
      after a kill resumes and reproduces the uninterrupted result.
    teacher_cache: optional cache built from exactly `token_windows_train` with the
      objective's layers (`cache_teacher_outputs`); then no teacher forward runs in training.
    timer: optional StageTimer (stages pack, eval_before, train, eval_after, unpack).
    val_groups: optional text-set name per validation window (per-set perplexities in the
      validation metrics; see `make_alignment_eval`).

  Returns:
    (aligned_params, report) with report keys logit_kl_before/after, hidden_kl_before/after,
    js_before/after, top1_agreement_before/after, ppl(_<group>)_before/after and val_teacher
    (the teacher's validation perplexities), train_tokens (tokens over all updates),
    tokens_per_s (this call, first-step compile included), tokens_per_s_steady (without the
    first update), num_steps, start_step, best_step, trainable_params,
    frozen_params, trainable_selector.
  """
  train = np.asarray(token_windows_train, np.int32)
  objective = config.objective
  mask = trainable_mask(student_params, config.trainable)
  trainable_info = describe_trainable(student_params, mask)
  # One flat vector per compressed leaf: ~3,400 factor arrays -> ~210 (see packing.py).
  with maybe_stage(timer, "pack"):
    student_params, mask = pack_compressed(student_params, mask)
  if trainable_info["trainable_params"] == 0:
    raise ValueError(f"selector {config.trainable!r} selects no float arrays to train")
  mask_leaves, mask_def = jax.tree_util.tree_flatten(mask)
  optimizer, step = _alignment_step(model_config, objective, _resolved_optimizer(config),
                                    mask_def, tuple(mask_leaves))
  if teacher_cache is not None:
    if tokens_fingerprint(np.asarray(teacher_cache.tokens)) != tokens_fingerprint(train):
      raise ValueError("teacher_cache was built from other windows than token_windows_train")
    wanted = tuple(range(model_config.num_layers)) if objective.layers is None else tuple(
        objective.layers)
    if tuple(teacher_cache.layers) != wanted:
      raise ValueError(f"teacher_cache holds layers {teacher_cache.layers}, objective uses "
                       f"{wanted}")
    constants = teacher_head_params(teacher_params, model_config)
  else:
    constants = teacher_params

  def batch_fn(i: int) -> dict:
    rows = batch_indices(i, config.batch_size, train.shape[0], config.seed)
    batch = {"tokens": jnp.asarray(train[rows])}
    if teacher_cache is not None:
      batch.update({k: jnp.asarray(v) for k, v in teacher_cache.batch(rows).items()})
    return place_batch(batch)

  eval_fn = make_alignment_eval(teacher_params, model_config, token_windows_val, objective,
                                config.eval_batch_size, val_groups)
  with maybe_stage(timer, "eval_before"):  # includes compiling the validation function
    before = eval_fn(student_params)
    # The teacher's own perplexities on the validation windows: the floor of the curve.
    teacher_val = {k: v for k, v in eval_fn(teacher_params).items() if k.startswith("ppl")}
  with maybe_stage(timer, "train"):
    state = init_train_state(student_params, optimizer, mask, config.seed)
    result = run_training(
        state, functools.partial(step, constants=constants), batch_fn, config.num_steps, workdir,
        eval_fn=eval_fn, log_every=config.log_every, eval_every=config.eval_every,
        checkpoint_every=config.checkpoint_every, max_to_keep=config.max_to_keep,
        best_metric=config.best_metric, best_mode="min", progress=config.progress)
  params = result.state.params
  chosen_step = result.final_step
  if (config.restore_best and result.best_step is not None
      and result.best_step != result.final_step):
    store = TrainCheckpoints(result.checkpoint_directory)
    best_state, _ = store.restore(result.best_step, result.state)
    store.close()
    params, chosen_step = best_state.params, result.best_step
  with maybe_stage(timer, "eval_after"):
    after = eval_fn(params)
  with maybe_stage(timer, "unpack"):
    params = jax.block_until_ready(unpack_compressed(params))
  report: dict[str, Any] = {}
  for key in before:
    report[f"{key}_before"] = before[key]
    report[f"{key}_after"] = after[key]
  report.update({
      "train_tokens": int(result.final_step * config.batch_size * train.shape[1]),
      "tokens_per_s": result.tokens_per_s,
      "tokens_per_s_steady": result.tokens_per_s_steady, "num_steps": result.final_step,
      "start_step": result.start_step, "best_step": result.best_step,
      "returned_step": chosen_step, "val_teacher": teacher_val,
      "trainable_params": trainable_info["trainable_params"],
      "frozen_params": trainable_info["frozen_params"], "trainable_selector": config.trainable,
      "workdir": os.path.abspath(workdir)})
  return params, report
