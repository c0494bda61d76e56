"""How far a model is from saying a gold answer: its first token's rank and the answer's log-prob.

A greedy answer either holds the value or not; the rank of the gold answer's first token in the
model's next-token distribution after the chat prompt (1 = the greedy choice) and the gold
answer's summed log-probability under teacher forcing show how close a miss was (issue 28's
diagnosis: a stored-but-not-extracted fact ranks near the top, an unstored one does not).
Rows are the same prompt + completion tokens the training Q&A use (`chat_format.qa_prompt`,
answer without end of turn), right-padded to a multiple of `BUCKET` tokens so a few shapes
compile.
"""

from __future__ import annotations

import functools
import statistics
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from penrose_jax.models import chat_format, llama
from penrose_jax.models.config import ModelConfig

BUCKET = 32


@functools.partial(jax.jit, static_argnames=("model_config",))
def _scores(params, tokens, start, end, model_config):
  """(rank of tokens[start], sum of log p(tokens[t]) for start <= t < end) of one row."""
  logits = llama.forward(params, tokens[None, :-1], model_config).logits[0].astype(jnp.float32)
  logp = jax.nn.log_softmax(logits, axis=-1)
  targets = tokens[1:]
  gold = jnp.take_along_axis(logp, targets[:, None], axis=-1)[:, 0]
  positions = jnp.arange(targets.shape[0])
  in_answer = (positions >= start - 1) & (positions < end - 1)
  first = logp[start - 1]
  rank = 1 + jnp.sum(first > first[tokens[start]])
  return rank, jnp.sum(jnp.where(in_answer, gold, 0.0))


def answer_ranks(params: Any, model_config: ModelConfig, tokenizer: Any,
                 items: Sequence[tuple[str, str]]) -> list[dict[str, Any]]:
  """The gold answers' first-token rank and summed log-probability, one question at a time.

  Args:
    params: dense params (pass `dense_equivalent` of compressed / LoRA params).
    model_config: the architecture.
    tokenizer: a TextTokenizer with a chat template.
    items: (question, gold answer) pairs.

  Returns:
    Per item {'rank': int (1 = the model's first choice), 'logprob': float, 'tokens': int}.
  """
  out = []
  pad = chat_format.pad_id(tokenizer)
  for question, answer in items:
    prompt = tokenizer.encode(chat_format.qa_prompt(tokenizer, question))
    gold = tokenizer.encode(answer)
    if not gold:
      raise ValueError(f"gold answer {answer!r} of question {question!r} has no tokens")
    ids = list(prompt) + list(gold)
    length = -(-len(ids) // BUCKET) * BUCKET
    tokens = np.full((length + 1,), pad, np.int32)
    tokens[:len(ids)] = ids
    rank, logprob = _scores(params, jnp.asarray(tokens), len(prompt), len(ids), model_config)
    out.append({"rank": int(rank), "logprob": float(logprob), "tokens": len(gold)})
  return out


def rank_summary(rows: Sequence[dict[str, Any]]) -> Optional[dict[str, float]]:
  """Median first-token rank, share ranked first / in the top 10, mean log-prob per token.

  Args:
    rows: `answer_ranks` output.

  Returns:
    The summary, or None without rows.
  """
  if not rows:
    return None
  ranks = [r["rank"] for r in rows]
  return {"median_rank": float(statistics.median(ranks)),
          "top1": sum(r == 1 for r in ranks) / len(ranks),
          "top10": sum(r <= 10 for r in ranks) / len(ranks),
          "logprob_per_token": sum(r["logprob"] for r in rows) / sum(r["tokens"] for r in rows)}
