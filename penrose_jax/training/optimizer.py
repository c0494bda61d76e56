"""AdamW with linear warmup, cosine decay and global-norm clipping."""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import optax


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """Optimizer hyper-parameters (any object or mapping with these names works too).

  Attributes:
    learning_rate: peak learning rate after warmup.
    warmup_steps: linear warmup from 0 to `learning_rate`.
    total_steps: schedule length (warmup included); cosine decays to
      `learning_rate * end_lr_fraction` at this step.
    weight_decay: decoupled AdamW weight decay, applied to arrays with ndim >= 2 only
      (not to norm scales or biases).
    clip_norm: global-norm gradient clipping threshold; <= 0 disables clipping.
    b1, b2, eps: Adam moments.
    end_lr_fraction: final learning rate as a fraction of the peak.
  """

  learning_rate: float = 1e-4
  warmup_steps: int = 0
  total_steps: int = 1000
  weight_decay: float = 0.0
  clip_norm: float = 1.0
  b1: float = 0.9
  b2: float = 0.999
  eps: float = 1e-8
  end_lr_fraction: float = 0.0


def _field(config: Any, name: str) -> Any:
  """Reads a field from a dataclass, ConfigDict or mapping, defaulting to OptimizerConfig."""
  default = getattr(OptimizerConfig, name)
  if isinstance(config, Mapping):
    return config.get(name, default)
  return getattr(config, name, default)


def make_schedule(config: Any) -> optax.Schedule:
  """The learning-rate schedule of `make_optimizer`, for logging.

  Args:
    config: OptimizerConfig-like object or mapping.

  Returns:
    step -> learning rate.
  """
  peak = float(_field(config, "learning_rate"))
  warmup = int(_field(config, "warmup_steps"))
  total = max(int(_field(config, "total_steps")), warmup + 1)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0 if warmup > 0 else peak, peak_value=peak, warmup_steps=warmup,
      decay_steps=total, end_value=peak * float(_field(config, "end_lr_fraction")))


def _decay_mask(params: Any) -> Any:
  """True for matrices (ndim >= 2); vectors such as norm scales and biases are not decayed."""
  return jax.tree_util.tree_map(lambda x: getattr(x, "ndim", 0) >= 2, params)


def make_optimizer(config: Any) -> optax.GradientTransformation:
  """AdamW + warmup/cosine schedule + global-norm clipping.

  Args:
    config: OptimizerConfig-like object or mapping with fields learning_rate, warmup_steps,
      total_steps, weight_decay, clip_norm (and optionally b1, b2, eps, end_lr_fraction).

  Returns:
    The optax transformation (clip first, then AdamW).
  """
  adamw = optax.adamw(make_schedule(config), b1=float(_field(config, "b1")),
                      b2=float(_field(config, "b2")), eps=float(_field(config, "eps")),
                      weight_decay=float(_field(config, "weight_decay")), mask=_decay_mask)
  clip_norm = float(_field(config, "clip_norm"))
  if clip_norm <= 0:
    return adamw
  return optax.chain(optax.clip_by_global_norm(clip_norm), adamw)
