"""The self-test inside qa_tune: recall of the taught facts, readable without writing an exam.

The 'recall' Q&A source (qa/fact_recall.py) writes per fact one held-out wording (never trained)
and one trained wording to DIR/qa_pairs.selftest.jsonl. Recall = the greedy closed-book answer
contains the fact's value (`evaluation.closed_book.score_open_exam`'s 'contains'). Scored:
  * at the learning-curve points, on at most `selftest.curve_per_doc` held-out wordings per
    document (the curve key 'selftest_recall', which the plateau stop can watch);
  * before and after training on every held-out wording (the report's "N of M facts recalled"
    per document) and, after, on the trained wordings too: trained high / held-out low means the
    facts are stored under the training wordings, not under the entity; both low means
    under-fitting (issue 28's diagnosis). `gold_ranks` adds, before and after, the gold
    answer's first-token rank and log-prob on the trained and held-out wordings and the open
    exam (evaluation/answer_rank.py): how close a miss was.
"""

from __future__ import annotations

import pathlib
import statistics
from typing import Any, Mapping, Optional, Sequence

import ml_collections

from penrose_jax.evaluation import answer_rank, closed_book, exam_files
from penrose_jax.models.linear import dense_equivalent
from penrose_jax.qa import fact_recall
from penrose_jax.reporting import plots


def open_questions(questions: Sequence[fact_recall.SelfTestQuestion]
                   ) -> list[exam_files.OpenQuestion]:
  """Self-test questions as open exam questions (the value is the accepted answer)."""
  return [exam_files.OpenQuestion(q.question, (q.answer,), q.doc_id, q.fact) for q in questions]


def score(loaded: Any, params: Any, questions: Sequence[fact_recall.SelfTestQuestion],
          max_new_tokens: int) -> dict[str, Any]:
  """Greedy recall of self-test questions.

  Args:
    loaded: model_registry.Loaded (config and tokenizer are used).
    params: the params (scored through their dense equivalent).
    questions: the questions (one split).
    max_new_tokens: answer budget.

  Returns:
    {'questions', 'recalled', 'recall' (None without questions), 'by_doc': {doc_id: 'N of M
    facts recalled'}, 'answers': per question (question, gold, answer, contains)}.
  """
  result = closed_book.score_open_exam(dense_equivalent(params), loaded.config, loaded.tokenizer,
                                       open_questions(questions), max_new_tokens)
  recalled = int(round(sum(a["contains"] for a in result["answers"])))
  return {"questions": len(questions), "recalled": recalled, "recall": result["contains"],
          "by_doc": fact_recall.recalled_summary(result["by_doc"]),
          "answers": result["answers"]}


def gold_ranks(loaded: Any, params: Any, selftest: Sequence[fact_recall.SelfTestQuestion],
               open_exam: Sequence[exam_files.OpenQuestion]) -> dict[str, Any]:
  """The gold answers' first-token rank and log-prob on each question set (the diagnosis).

  Args:
    loaded: model_registry.Loaded.
    params: the params (scored through their dense equivalent).
    selftest: self-test questions (both splits).
    open_exam: the open exam questions (first accepted answer).

  Returns:
    {'trained': summary, 'heldout': summary, 'exam': summary} (`answer_rank.rank_summary`;
    None for an empty set).
  """
  values = dense_equivalent(params)
  sets = {split: [(q.question, q.answer) for q in fact_recall.pick_selftest(selftest, split)]
          for split in fact_recall.SPLITS}
  sets["exam"] = [(q.question, q.answers[0]) for q in open_exam]
  return {name: answer_rank.rank_summary(answer_rank.answer_ranks(
      values, loaded.config, loaded.tokenizer, items)) for name, items in sets.items()}


def exposure_stats(exposures: Mapping[str, int], facts: int) -> Optional[dict[str, Any]]:
  """Rows holding a restatement of each fact over the planned run (min / median / max).

  Args:
    exposures: fact group -> rows (curriculum_config.TrainOutcome.fact_exposures).
    facts: facts of the material (a fact with no row counts as 0).

  Returns:
    {'facts', 'min', 'median', 'mean', 'max'}, or None without facts.
  """
  if not facts:
    return None
  values = list(exposures.values()) + [0] * max(facts - len(exposures), 0)
  return {"facts": facts, "min": min(values), "median": statistics.median(values),
          "mean": sum(values) / len(values), "max": max(values)}


def curve_plot(curve: Sequence[Mapping[str, Any]], path: str | pathlib.Path
               ) -> Optional[pathlib.Path]:
  """Self-test recall, open-exam recall and multiple-choice accuracy against training tokens.

  Args:
    curve: report.json's exam_curve points (train_tokens and the scores each point has).
    path: destination PNG.

  Returns:
    The PNG path, or None when fewer than two points have any of the scores.
  """
  labels = {"selftest_recall": "self-test recall (held-out wordings)",
            "exam_contains": "exam open recall (contains)",
            "exam_accuracy_mean": "exam multiple choice (length-normalised)"}
  series = {}
  for key, label in labels.items():
    points = [(p["train_tokens"], p[key]) for p in curve if p.get(key) is not None]
    if len(points) > 1:
      series[label] = ([x for x, _ in points], [y for _, y in points])
  if not series:
    return None
  return plots.line_plot(series, path, "recall and exam scores during training",
                         "training tokens", "fraction of questions")


def settings(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The `selftest` block of a qa_tune config, with defaults for configs that predate it."""
  defaults = ml_collections.ConfigDict(dict(curve_per_doc=6, max_new_tokens=16,
                                            curve_open_exam=False))
  block = config.get("selftest")
  if block is not None:
    defaults.update(block.to_dict())
  return defaults
