"""Multiple-choice and LAMBADA scoring for the `general_eval` JSONL formats.

Conventions follow the source package of the data (see shared/data/README.md): the choice whose
continuation has the highest total log-likelihood given the query wins; WinoGrande scores the
shared continuation under each context option; LAMBADA counts an item correct when greedy
decoding reproduces the continuation exactly (checked teacher-forced: every continuation token
is the argmax prediction, which is the same event).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Optional, Sequence

import numpy as np
from tqdm import tqdm

from penrose_jax.evaluation.scoring import batched, next_token_logprobs, pad_batch
from penrose_jax.models.config import ModelConfig
from penrose_jax.parallel.placement import place_batch, to_host

# Text placed between query and choice, per benchmark (the source package's delimiters).
DELIMITERS = {"arc_easy": "\nAnswer: ", "piqa": "Answer: ", "copa": " ", "winogrande": " ",
              "lambada_openai": " "}


@dataclasses.dataclass(frozen=True)
class ScoringItem:
  """One question: candidate (context, continuation) pairs and the gold index.

  Attributes:
    pairs: (context, continuation) per candidate.
    gold: index of the right candidate.
    greedy: score by exact greedy match of the single continuation (LAMBADA).
  """

  pairs: tuple[tuple[str, str], ...]
  gold: int
  greedy: bool = False


def load_benchmark(path: str | pathlib.Path, name: Optional[str] = None,
                   max_items: Optional[int] = None) -> list[ScoringItem]:
  """Reads a general_eval JSONL file into scoring items.

  Args:
    path: the .jsonl file.
    name: benchmark name (defaults to the file stem); picks the delimiter and format.
    max_items: keep only the first this many items.

  Returns:
    List of ScoringItem.

  Raises:
    FileNotFoundError: missing file.
    ValueError: a line that is not JSON or lacks the fields its format needs (names the line).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise FileNotFoundError(f"benchmark file {path} does not exist")
  name = name or path.stem
  delim = DELIMITERS.get(name, " ")
  items = []
  with path.open(encoding="utf-8") as handle:
    for line_no, line in enumerate(handle, 1):
      if not line.strip():
        continue
      try:
        row = json.loads(line)
        if "context_options" in row:
          pairs = tuple((c, delim + row["continuation"]) for c in row["context_options"])
          item = ScoringItem(pairs, int(row["gold"]))
        elif "choices" in row:
          pairs = tuple((row["query"], delim + c) for c in row["choices"])
          item = ScoringItem(pairs, int(row["gold"]))
        else:
          item = ScoringItem(((row["context"], delim + row["continuation"]),), 0, greedy=True)
      except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ValueError(f"{path}:{line_no}: not a valid benchmark item ({err!r}); expected "
                         "fields query/choices/gold, context_options/continuation/gold, or "
                         "context/continuation") from err
      if not 0 <= item.gold < len(item.pairs):
        raise ValueError(f"{path}:{line_no}: gold={item.gold} outside 0..{len(item.pairs) - 1}")
      items.append(item)
      if max_items is not None and len(items) >= max_items:
        break
  if not items:
    raise ValueError(f"{path}: no benchmark items found")
  return items


def score_items(params: Any, config: ModelConfig, tokenizer: Any, items: Sequence[ScoringItem],
                batch_size: int = 16, max_len: Optional[int] = None,
                progress: bool = False, per_item: bool = False) -> dict[str, Any]:
  """Accuracy of the model on scoring items.

  Args:
    params: params pytree.
    config: the architecture.
    tokenizer: a TextTokenizer.
    items: from `load_benchmark`.
    batch_size: sequences per forward call.
    max_len: contexts are cut from the left so context + continuation fits (default
      config.max_position).
    progress: show a progress bar.
    per_item: also return 'per_item': per item {'logprob_sum', 'logprob_mean' (per candidate),
      'pred_sum', 'pred_mean', 'gold'} (for per-question and per-document reports).

  Returns:
    {'accuracy', 'items'} (and 'accuracy_norm': per-token-normalised choice, for reference).
  """
  max_len = max_len or config.max_position
  sequences, spans, owners = [], [], []
  for index, item in enumerate(items):
    for context, continuation in item.pairs:
      ctx = tokenizer.encode(context)
      cont = tokenizer.encode(continuation)
      ctx = ctx[-max(1, max_len - len(cont)):]
      sequences.append(ctx + cont)
      spans.append((len(ctx), len(ctx) + len(cont)))
      owners.append(index)
  # Sort by length so batches pad little; scores are put back in place afterwards.
  order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
  totals = np.zeros(len(sequences))
  greedy_ok = np.zeros(len(sequences), bool)
  cont_lens = np.array([end - start for start, end in spans])
  for chunk in tqdm(list(batched(order, batch_size)), desc="scoring", disable=not progress,
                    leave=False):
    tokens, _ = pad_batch([sequences[i] for i in chunk], batch_size)
    logp, hit = next_token_logprobs(params, place_batch(tokens), config)
    logp, hit = to_host(logp), to_host(hit)
    for row, seq_index in enumerate(chunk):
      start, end = spans[seq_index]
      # logp[:, t] scores token t + 1, so continuation tokens start..end-1 sit at start-1..end-2.
      totals[seq_index] = logp[row, start - 1:end - 1].sum()
      greedy_ok[seq_index] = bool(hit[row, start - 1:end - 1].all())
  correct = correct_norm = 0
  cursor = 0
  rows = []
  for item in items:
    n = len(item.pairs)
    scores = totals[cursor:cursor + n]
    means = scores / np.maximum(cont_lens[cursor:cursor + n], 1)
    if item.greedy:
      correct += int(greedy_ok[cursor])
      correct_norm += int(greedy_ok[cursor])
    else:
      correct += int(np.argmax(scores) == item.gold)
      correct_norm += int(np.argmax(means) == item.gold)
    if per_item:
      rows.append({"logprob_sum": scores.tolist(), "logprob_mean": means.tolist(),
                   "pred_sum": int(np.argmax(scores)), "pred_mean": int(np.argmax(means)),
                   "gold": item.gold})
    cursor += n
  result = {"accuracy": correct / len(items), "accuracy_norm": correct_norm / len(items),
            "items": len(items)}
  if per_item:
    result["per_item"] = rows
  return result
