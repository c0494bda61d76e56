"""Range checks of job config values, before any long stage.

A value out of range had been accepted (max_new_tokens=-5, temperature=-1) or failed late with
an error naming nothing (`calibration.num_windows=0`: numpy "need at least one array to
concatenate" after writing model/params; qa_tune `batch_size=0`: "range() arg 3 must not be
zero" after Q&A generation). Each rule here names its keys by the last dotted part, so one rule
covers every job (and the pipeline's per-stage sections); a failure is one ValueError naming the
full key, the value and the range expected.

`check_context` runs after the model is loaded: a window longer than the model's context had
run 188 s with 2 windows instead of 8.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Iterator

# (last key part, test, what is expected). Keys absent from a config are not checked.
_RULES: tuple[tuple[str, Callable[[Any], bool], str], ...] = (
    ("batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("eval_batch_size", lambda v: v >= 1, "an integer >= 1"),
    ("max_new_tokens", lambda v: v >= 1, "an integer >= 1"),
    ("answer_max_new_tokens", lambda v: v >= 1, "an integer >= 1"),
    ("exam_max_new_tokens", lambda v: v >= 1, "an integer >= 1"),
    ("trace_max_new_tokens", lambda v: v >= 1, "an integer >= 1"),
    ("chat_max_new_tokens", lambda v: v >= 1, "an integer >= 1"),
    ("num_windows", lambda v: v >= 1, "an integer >= 1"),
    ("window", lambda v: v >= 1, "an integer >= 1"),
    ("seq_len", lambda v: v >= 1, "an integer >= 1"),
    ("max_windows", lambda v: v >= 0, "an integer >= 0 (0 = all)"),
    ("num_steps", lambda v: v >= 0, "an integer >= 0"),
    ("top_p", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("learning_rate", lambda v: v >= 0, "a number >= 0"),
)
# `temperature` means sampling (>= 0, 0 = greedy) except under `objective` (a KL temperature,
# which divides logits: > 0).
_SAMPLING_TEMPERATURE = ("temperature", lambda v: v >= 0, "a number >= 0 (0 = greedy)")
_KL_TEMPERATURE = ("temperature", lambda v: v > 0, "a number > 0")
# Keys holding token windows that must fit the model's context (`check_context`).
WINDOW_KEYS = ("window", "seq_len")


def _leaves(config: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
  items = config.items() if hasattr(config, "items") else []
  for key, value in items:
    name = f"{prefix}.{key}" if prefix else str(key)
    if hasattr(value, "items"):
      yield from _leaves(value, name)
    else:
      yield name, value


def check_values(config: Any) -> None:
  """Checks every config value a rule covers (see _RULES).

  Args:
    config: a job config (ConfigDict or mapping), nested sections included.

  Raises:
    ValueError: naming the key, its value and the range expected.
  """
  for name, value in _leaves(config):
    last = name.rsplit(".", 1)[-1]
    rules = [r for r in _RULES if r[0] == last]
    if last == "temperature":
      rules = [_KL_TEMPERATURE if ".objective." in f".{name}" else _SAMPLING_TEMPERATURE]
    for _, test, expected in rules:
      if isinstance(value, bool) or not isinstance(value, (int, float)):
        continue  # a type error is ml_collections' to report
      if (isinstance(value, float) and not math.isfinite(value)) or not test(value):
        raise ValueError(f"config {name}={value!r} is out of range: expected {expected}")


def check_context(config: Any, context: int, model: str = "the model") -> None:
  """Checks that every token window of the config fits the model's context.

  Args:
    config: a job config.
    context: the model's context length (ModelConfig.max_position).
    model: the model's name, for the message.

  Raises:
    ValueError: naming the key, its value and the context.
  """
  for name, value in _leaves(config):
    if (name.rsplit(".", 1)[-1] in WINDOW_KEYS and isinstance(value, int)
        and not isinstance(value, bool) and value > context):
      raise ValueError(f"config {name}={value} is longer than the context of {model} "
                       f"({context} tokens): choose {name} <= {context}")
