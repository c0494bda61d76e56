"""The hyper-parameters of Q&A fine-tuning (`CurriculumConfig`), what a run returns
(`TrainOutcome`) and the check that the chosen trainable subset fits the model.

Kept apart from qa/trainer.py so the trainer holds the training logic only; qa_tune, self_test
and tests build configs without reading the trainer.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import jax

from penrose_jax.models import lora
from penrose_jax.qa.run_control import TRAINABLE
from penrose_jax.training import trainable_mask

MODES = ("sectionwise", "onepass", "onepass_augmented", "none")


@dataclasses.dataclass(frozen=True)
class CurriculumConfig:
  """Hyper-parameters of `train`.

  Attributes:
    mode: 'sectionwise', 'onepass', 'onepass_augmented' or 'none'.
    steps_per_section: updates per section (the budget of every mode is the sum over sections).
    epochs_per_section: when > 0, each section gets the fewest updates whose current rows make
      this many passes over its examples (text windows, study texts, Q&A); replaces
      steps_per_section.
    section_order: 'mixed', 'text_then_qa' or 'qa_then_text' (order of a section's rows).
    batch_size: rows per update.
    seq_len: tokens per row.
    replay_fraction: share of a section's rows replaying earlier sections.
    general_replay_fraction: share of rows of general text.
    trainable: 'lora', 'compressed' or 'all'.
    lora_rank: adapter rank ('lora').
    lora_alpha: adapter scale numerator ('lora').
    learning_rate, warmup_steps, weight_decay, clip_norm: optimizer (cosine to 10 %);
      learning_rate <= 0 picks the rate that fits `trainable` (`RECIPE_LEARNING_RATES`).
    seed: data-order, LoRA-init and step-randomness seed.
    trace_questions: questions per section answered before/after in traces.jsonl.
    trace_max_new_tokens: greedy answer length in traces.
    max_section_windows: at most this many text windows per section (0 = all).
    log_every: metrics.jsonl interval.
    max_traces: fail if the train step compiles more than this many times (None = no check).
    checkpoint_every_sections: sectionwise mode checkpoints after every this many sections
      and after the last (a resumed run redoes the sections after the latest checkpoint).
    completion: what a Q&A row trains the model to say: 'answer_reasoning' (the answer, then
      'Reasoning: ...') or 'answer' (the answer alone: shorter rows, the whole loss on the
      fact).
    curriculum_passes: 'sectionwise' goes through all sections in order this many times
      (each pass gives each section epochs_per_section / steps_per_section of updates); the
      other modes get the same budget.
    pack_qa: pack each section's Q&A pairs into multi-turn chat rows of seq_len tokens
      (`train_data.pack_qa_examples`; the injection benchmark's 804 answer-only pairs: 624
      rows at 112 tokens, 224 rows = 57k tokens at 256 against 90k unpacked at 112); later
      turns see earlier pairs of the section in context.
    trace_losses: score each section's Q&A and text loss before / after its updates in
      traces.jsonl (two forward passes over the section per section).
    curve_points: > 1 scores `train`'s `evaluate` callback at this many - 1 evenly spaced
      points inside the run (section ends in 'sectionwise'), for a learning curve
      (curve.jsonl); the job adds the before / after points.
    patience: > 0 stops a shuffled run ('onepass', 'onepass_augmented') once the curve's
      `plateau_key` has not risen by more than `plateau_min_delta` over its best for this many
      points in a row (a plateau); the budget (and the learning-rate schedule) is the maximum.
    plateau_key: the `evaluate` key watched for the plateau (e.g. 'selftest_recall').
    plateau_min_delta: a rise this small does not count as progress.
    max_train_s: > 0 stops a shuffled run at the first curve point after this many seconds of
      training steps (a wall-time budget on a slow or shared machine; a rerun on the same
      workdir continues from there).
  """

  mode: str = "sectionwise"
  steps_per_section: int = 4
  epochs_per_section: float = 0.0
  section_order: str = "mixed"
  batch_size: int = 4
  seq_len: int = 128
  replay_fraction: float = 0.25
  general_replay_fraction: float = 0.125
  trainable: str = "lora"
  lora_rank: int = 8
  lora_alpha: float = 16.0
  learning_rate: float = 1e-3
  warmup_steps: int = 2
  weight_decay: float = 0.0
  clip_norm: float = 1.0
  seed: int = 0
  trace_questions: int = 2
  trace_max_new_tokens: int = 24
  max_section_windows: int = 0
  log_every: int = 1
  max_traces: Optional[int] = None
  checkpoint_every_sections: int = 1
  # One-pass and shuffled modes: also a train-state checkpoint every this many updates (0 =
  # only at the end and at curve-point stops); a killed run resumes from the latest.
  checkpoint_every_steps: int = 0
  completion: str = "answer_reasoning"
  curriculum_passes: int = 1
  pack_qa: bool = False
  trace_losses: bool = True
  curve_points: int = 0
  patience: int = 0
  plateau_key: str = ""
  plateau_min_delta: float = 0.0
  max_train_s: float = 0.0


COMPLETIONS = ("answer_reasoning", "answer")


@dataclasses.dataclass
class TrainOutcome:
  """What `train` returns.

  Attributes:
    params: trained params (LoRA leaves kept; see lora.merge_lora).
    steps: updates done in total.
    train_tokens: steps x batch_size x seq_len (the token budget, padding included).
    loss_tokens: masked target tokens over all updates (from the plan).
    tokens_per_s: train tokens per second of step time in this process (restored steps not
      counted).
    final_loss: train loss of the last update (None when nothing ran).
    sections: sections trained on (sectionwise) or 0.
    row_counts: rows per kind over the plan ('current', 'replay', 'general').
    trainable: describe_trainable summary without the path list (+ 'selector').
    notes: human-readable remarks (fallbacks).
    input_tokens: non-padding tokens over all planned rows.
    section_steps: updates per section (empty for 'none').
    fact_exposures: per fact group, the rows of the planned run holding one of its texts.
    planned_steps: updates planned (steps < planned_steps after a plateau stop).
  """

  params: Any
  steps: int
  train_tokens: int
  loss_tokens: int
  tokens_per_s: float
  final_loss: Optional[float]
  sections: int
  row_counts: dict[str, int]
  trainable: dict[str, Any]
  notes: list[str]
  input_tokens: int = 0
  section_steps: list[int] = dataclasses.field(default_factory=list)
  fact_exposures: dict[str, int] = dataclasses.field(default_factory=dict)
  planned_steps: int = 0


def check_trainable(params: Any, cfg: CurriculumConfig) -> None:
  """Fails before any work when `cfg.trainable` cannot train this model.

  Args:
    params: model params (dense or compressed leaves).
    cfg: the curriculum config.

  Raises:
    ValueError: unknown `trainable`; 'lora' on a model whose projections are all compressed
      (LoRA wraps dense kernels); 'compressed' on a model without compressed leaves.
  """
  if cfg.trainable not in TRAINABLE:
    raise ValueError(f"trainable must be one of {TRAINABLE}, got {cfg.trainable!r}")
  if cfg.trainable == "lora" and not lora.wrappable_kernels(params):
    raise ValueError("trainable='lora' wraps dense projection kernels, but every projection "
                     "of this model is compressed: use trainable='compressed' (trains the "
                     "stored factors; the model stays compressed)")
  if cfg.trainable == "compressed" and not any(
      jax.tree_util.tree_leaves(trainable_mask(params, "compressed"))):
    raise ValueError("trainable='compressed' but the model has no compressed leaves; load a "
                     "compressed checkpoint or use trainable='lora' / 'all'")


def prepare_trainable(params: Any, cfg: CurriculumConfig) -> tuple[Any, str]:
  """Adds LoRA adapters when asked and picks the trainable selector.

  Args:
    params: model params (dense or compressed leaves).
    cfg: the curriculum config.

  Returns:
    (params to train, selector for training.trainable_mask).

  Raises:
    ValueError: see `check_trainable`.
  """
  check_trainable(params, cfg)
  if cfg.trainable == "lora":
    return (lora.add_lora(params, cfg.lora_rank, cfg.lora_alpha, seed=cfg.seed),
            lora.LORA_TRAINABLE_REGEX)
  return params, cfg.trainable
