"""Closed-book evaluation on held-out questions and general benchmarks (forgetting).

  * Log-likelihood accuracy: each held-out question is put in the chat template (the same prompt
    the training Q&A use) as the context, each of its 4 choices is a continuation, and the
    choice with the highest total log-likelihood wins (`evaluation.multiple_choice.score_items`).
  * Exact match / token F1 of the greedy answer (`trainer.greedy_answer`: first line of
    `generation.chat`, short max_new_tokens) against the gold answer, SQuAD-style normalisation
    (lower case, punctuation and articles removed, whitespace collapsed).
  * General accuracy: ARC-Easy / PIQA / COPA (or any configured benchmarks) through
    `evaluation.benchmarks.benchmark_accuracies` (the evaluate job's scorer), before and after
    training.
"""

from __future__ import annotations

import collections
import re
import string
from typing import Any, Optional, Sequence

import ml_collections

from penrose_jax.evaluation import benchmarks, multiple_choice
from penrose_jax.models.config import ModelConfig
from penrose_jax.models.linear import dense_equivalent
from penrose_jax.qa import train_data, trainer
from penrose_jax.qa.curated import HeldoutQuestion


def normalize_answer(text: str) -> str:
  """SQuAD normalisation: lower case, no punctuation, no articles, single spaces.

  Args:
    text: an answer.

  Returns:
    The normalised text.
  """
  text = text.lower()
  text = "".join(ch for ch in text if ch not in set(string.punctuation))
  text = re.sub(r"\b(a|an|the)\b", " ", text)
  return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
  """1.0 when the normalised strings are equal.

  Args:
    prediction: model answer.
    gold: reference answer.

  Returns:
    0.0 or 1.0.
  """
  return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
  """Token-overlap F1 of the normalised answers.

  Args:
    prediction: model answer.
    gold: reference answer.

  Returns:
    F1 in [0, 1].
  """
  pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
  if not pred or not ref:
    return float(pred == ref)
  common = sum((collections.Counter(pred) & collections.Counter(ref)).values())
  if common == 0:
    return 0.0
  precision, recall = common / len(pred), common / len(ref)
  return 2 * precision * recall / (precision + recall)


def heldout_ll_accuracy(params: Any, model_config: ModelConfig, tokenizer: Any,
                        questions: Sequence[HeldoutQuestion], batch_size: int = 8
                        ) -> Optional[float]:
  """Multiple-choice accuracy by log-likelihood of each choice after the chat prompt.

  Args:
    params: params pytree.
    model_config: the architecture.
    tokenizer: a TextTokenizer.
    questions: held-out questions (4 choices each).
    batch_size: sequences per forward.

  Returns:
    Accuracy, or None without questions.
  """
  if not questions:
    return None
  items = [multiple_choice.ScoringItem(
      tuple((train_data.qa_prompt(tokenizer, q.question), choice) for choice in q.choices),
      q.choices.index(q.answer)) for q in questions]
  return multiple_choice.score_items(params, model_config, tokenizer, items,
                                     batch_size=batch_size)["accuracy"]


def heldout_generation_scores(params: Any, model_config: ModelConfig, tokenizer: Any,
                              questions: Sequence[HeldoutQuestion], max_new_tokens: int = 24
                              ) -> dict[str, Any]:
  """Greedy closed-book answers scored by exact match and token F1.

  Args:
    params: params pytree.
    model_config: the architecture.
    tokenizer: a TextTokenizer.
    questions: held-out questions.
    max_new_tokens: answer budget.

  Returns:
    {'em', 'f1' (means, None without questions), 'answers': [{question, gold, answer, em, f1}]}.
  """
  answers = []
  replies = trainer.greedy_answers(params, model_config, tokenizer,
                                   [q.question for q in questions], max_new_tokens)
  for q, answer in zip(questions, replies):
    answers.append({"question": q.question, "gold": q.answer, "answer": answer,
                    "em": exact_match(answer, q.answer), "f1": token_f1(answer, q.answer)})
  n = len(answers)
  return {"em": sum(a["em"] for a in answers) / n if n else None,
          "f1": sum(a["f1"] for a in answers) / n if n else None, "answers": answers}


def evaluate_qa_model(loaded: Any, params: Any, questions: Sequence[HeldoutQuestion],
                      eval_config: ml_collections.ConfigDict) -> dict[str, Any]:
  """All closed-book and general metrics of one set of params.

  Args:
    loaded: model_registry.Loaded (config, tokenizer, name; its params are replaced).
    params: the params to score.
    questions: held-out questions about the trained documents.
    eval_config: needs benchmark_dir, benchmarks (comma list, '' = none), max_items,
      batch_size, answer_max_new_tokens.

  Returns:
    {'heldout_ll_accuracy', 'heldout_em', 'heldout_f1', 'heldout_answers', 'general_accuracy'
    (per benchmark), 'skipped'}.
  """
  # Scoring needs values only: compressed / LoRA leaves are evaluated through their dense
  # equivalent, so no compressed structure is compiled and decoding runs at dense speed.
  params = dense_equivalent(params)
  ll = heldout_ll_accuracy(params, loaded.config, loaded.tokenizer, questions,
                           eval_config.batch_size)
  gen = heldout_generation_scores(params, loaded.config, loaded.tokenizer, questions,
                                  eval_config.answer_max_new_tokens)
  general = benchmarks.benchmark_accuracies(
      params, loaded.config, loaded.tokenizer, eval_config.benchmark_dir, eval_config.benchmarks,
      eval_config.max_items if eval_config.max_items > 0 else None, eval_config.batch_size,
      progress=True)
  return {"heldout_ll_accuracy": ll, "heldout_em": gen["em"], "heldout_f1": gen["f1"],
          "heldout_answers": gen["answers"], "general_accuracy": general["accuracy"],
          "skipped": general["skipped"]}
