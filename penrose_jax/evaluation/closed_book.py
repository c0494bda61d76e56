"""Closed-book scoring: a user's exam, held-out questions and general benchmarks (forgetting).

The one scorer of closed-book questions for exam_eval, evaluate, qa_tune, self_test and the
pipeline; the readers of exam files are `exam_files`.

  * Greedy answer (`greedy_answers`): the first line of the model's chat reply
    (`generation.chat_batch`, short max_new_tokens), before any 'Reasoning:' part.
  * A user's exam (`evaluate_exam`): multiple-choice accuracy by summed and by mean-per-token
    log-likelihood of each choice after the chat prompt, and open questions by exact match,
    token F1 and containment of the greedy answer; both also per document.
  * Held-out log-likelihood accuracy: each held-out question is put in the chat template (the
    same prompt the training Q&A use) as the context, each of its 4 choices is a continuation,
    and the choice with the highest total log-likelihood wins
    (`evaluation.multiple_choice.score_items`).
  * Exact match / token F1 of the greedy answer against the gold answer, SQuAD-style
    normalisation (lower case, punctuation and articles removed, whitespace collapsed).
  * General accuracy: ARC-Easy / PIQA / COPA (or any configured benchmarks) through
    `evaluation.benchmarks.benchmark_accuracies` (the evaluate job's scorer), before and after
    training.
"""

from __future__ import annotations

import collections
import re
import string
import unicodedata
from typing import Any, Optional, Sequence

import ml_collections

from penrose_jax.compression.packing import unpack_compressed
from penrose_jax.evaluation import benchmarks, multiple_choice
from penrose_jax.evaluation.exam_files import ChoiceQuestion, OpenQuestion
from penrose_jax.models import chat_format, generation
from penrose_jax.models.config import ModelConfig
from penrose_jax.models.linear import dense_equivalent

NO_DOC = "(no doc_id)"  # per-document key of questions without a doc_id
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """SQuAD normalisation after Unicode NFKC: lower case, no punctuation, no articles.

  NFKC first, so that one unit written with different code points is one answer: the micro
  sign and the Greek mu ('310 µm' = '310 μm'), superscripts ('g/cm³' = 'g/cm3').

  Args:
    text: an answer.

  Returns:
    The normalised text.
  """
  text = unicodedata.normalize("NFKC", text).lower()
  text = "".join(ch for ch in text if ch not in _PUNCTUATION)
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


def greedy_answer(params: Any, model_config: ModelConfig, tokenizer: Any, question: str,
                  max_new_tokens: int) -> str:
  """The model's greedy closed-book answer: the first line of its chat reply.

  Args:
    params: params pytree.
    model_config: the architecture.
    tokenizer: a TextTokenizer.
    question: the question.
    max_new_tokens: generation budget.

  Returns:
    The answer text (the 'Reasoning:' part and later lines dropped).
  """
  return greedy_answers(params, model_config, tokenizer, [question], max_new_tokens)[0]


def greedy_answers(params: Any, model_config: ModelConfig, tokenizer: Any,
                   questions: Sequence[str], max_new_tokens: int, batch_size: int = 16
                   ) -> list[str]:
  """`greedy_answer` for many questions, decoded in batches (`generation.chat_batch`).

  Args:
    params: params pytree.
    model_config: the architecture.
    tokenizer: a TextTokenizer.
    questions: the questions.
    max_new_tokens: generation budget per answer.
    batch_size: questions decoded together.

  Returns:
    The answers in question order (each equal to `greedy_answer`'s).
  """
  if not questions:
    return []
  # Values only: the dense equivalent decodes at dense speed and compiles once per model shape.
  # Unpacking first is free on the host (packing.py) and keeps this compile to the stored leaves.
  replies = generation.chat_batch(dense_equivalent(unpack_compressed(params)), model_config,
                                  tokenizer, questions, max_new_tokens=max_new_tokens,
                                  batch_size=batch_size)
  return [chat_format.first_answer_line(reply) for reply in replies]


def _by_doc(rows: Sequence[dict], keys: Sequence[str]) -> dict[str, dict[str, float]]:
  groups: dict[str, list[dict]] = collections.defaultdict(list)
  for row in rows:
    groups[row["doc_id"] or NO_DOC].append(row)
  return {doc: {"questions": len(group), **{k: sum(r[k] for r in group) / len(group)
                                            for k in keys}}
          for doc, group in sorted(groups.items())}


def score_choice_exam(params: Any, model_config: ModelConfig, tokenizer: Any,
                      questions: Sequence[ChoiceQuestion], batch_size: int = 8
                      ) -> dict[str, Any]:
  """Closed-book multiple-choice accuracy by summed and by mean-per-token log-likelihood.

  Args:
    params: params pytree (dense or its dense equivalent: values only are needed).
    model_config: the architecture.
    tokenizer: a TextTokenizer.
    questions: the questions.
    batch_size: sequences per forward.

  Returns:
    {'accuracy_sum', 'accuracy_mean' (None without questions), 'by_doc': {doc_id: {questions,
    accuracy_sum, accuracy_mean}}, 'answers': per question {question, doc_id, gold, pred_sum,
    pred_mean, correct_sum, correct_mean, logprob_sum, logprob_mean}}.
  """
  if not questions:
    return {"accuracy_sum": None, "accuracy_mean": None, "by_doc": {}, "answers": []}
  items = [multiple_choice.ScoringItem(
      tuple((chat_format.qa_prompt(tokenizer, q.question), choice) for choice in q.choices),
      q.gold) for q in questions]
  result = multiple_choice.score_items(params, model_config, tokenizer, items,
                                       batch_size=batch_size, per_item=True)
  rows = []
  for q, item in zip(questions, result["per_item"]):
    rows.append({"question": q.question, "doc_id": q.doc_id, "gold": q.choices[q.gold],
                 "pred_sum": q.choices[item["pred_sum"]],
                 "pred_mean": q.choices[item["pred_mean"]],
                 "correct_sum": float(item["pred_sum"] == q.gold),
                 "correct_mean": float(item["pred_mean"] == q.gold),
                 "logprob_sum": item["logprob_sum"], "logprob_mean": item["logprob_mean"]})
  by_doc = _by_doc(rows, ("correct_sum", "correct_mean"))
  return {"accuracy_sum": result["accuracy"], "accuracy_mean": result["accuracy_norm"],
          "by_doc": {doc: {"questions": v["questions"], "accuracy_sum": v["correct_sum"],
                           "accuracy_mean": v["correct_mean"]} for doc, v in by_doc.items()},
          "answers": rows}


def score_open_exam(params: Any, model_config: ModelConfig, tokenizer: Any,
                    questions: Sequence[OpenQuestion], max_new_tokens: int = 24
                    ) -> dict[str, Any]:
  """Greedy closed-book answers scored by exact match, token F1 and containment.

  Args:
    params: params pytree.
    model_config: the architecture.
    tokenizer: a TextTokenizer.
    questions: the questions.
    max_new_tokens: answer budget.

  Returns:
    {'em', 'f1', 'contains' (normalised gold inside the normalised answer; means, None without
    questions), 'by_doc': {doc_id: {questions, em, f1, contains}}, 'answers': per question}.
  """
  rows = []
  answers = greedy_answers(params, model_config, tokenizer,
                                   [q.question for q in questions], max_new_tokens)
  for q, answer in zip(questions, answers):
    norm = normalize_answer(answer)
    rows.append({
        "question": q.question, "doc_id": q.doc_id, "gold": list(q.answers), "answer": answer,
        "em": max(exact_match(answer, g) for g in q.answers),
        "f1": max(token_f1(answer, g) for g in q.answers),
        "contains": float(any(normalize_answer(g) in norm for g in q.answers))})
  n = len(rows)
  mean = lambda key: sum(r[key] for r in rows) / n if n else None
  return {"em": mean("em"), "f1": mean("f1"), "contains": mean("contains"),
          "by_doc": _by_doc(rows, ("em", "f1", "contains")), "answers": rows}


def evaluate_exam(params: Any, model_config: ModelConfig, tokenizer: Any,
                  choice_questions: Sequence[ChoiceQuestion],
                  open_questions: Sequence[OpenQuestion], batch_size: int = 8,
                  max_new_tokens: int = 24) -> dict[str, Any]:
  """Both parts of an exam, as the flat report keys the jobs write.

  Args:
    params: params pytree (pass the dense equivalent of compressed / LoRA params).
    model_config: the architecture.
    tokenizer: a TextTokenizer.
    choice_questions: multiple-choice questions.
    open_questions: open questions.
    batch_size: sequences per scoring forward.
    max_new_tokens: greedy answer budget of open questions.

  Returns:
    {'exam_questions', 'exam_accuracy_sum', 'exam_accuracy_mean', 'open_exam_questions',
    'exam_em', 'exam_f1', 'exam_contains', 'exam_by_doc': {doc_id: {mc_questions,
    accuracy_sum, accuracy_mean, open_questions, em, f1, contains}}, 'exam_answers':
    {'choice': [...], 'open': [...]}}.
  """
  mc = score_choice_exam(params, model_config, tokenizer, choice_questions, batch_size)
  op = score_open_exam(params, model_config, tokenizer, open_questions, max_new_tokens)
  by_doc: dict[str, dict[str, Any]] = {}
  for doc, row in mc["by_doc"].items():
    by_doc.setdefault(doc, {})["mc_questions"] = row["questions"]
    by_doc[doc].update(accuracy_sum=row["accuracy_sum"], accuracy_mean=row["accuracy_mean"])
  for doc, row in op["by_doc"].items():
    by_doc.setdefault(doc, {})["open_questions"] = row["questions"]
    by_doc[doc].update(em=row["em"], f1=row["f1"], contains=row["contains"])
  return {"exam_questions": len(choice_questions), "exam_accuracy_sum": mc["accuracy_sum"],
          "exam_accuracy_mean": mc["accuracy_mean"], "open_exam_questions": len(open_questions),
          "exam_em": op["em"], "exam_f1": op["f1"], "exam_contains": op["contains"],
          "exam_by_doc": dict(sorted(by_doc.items())),
          "exam_answers": {"choice": mc["answers"], "open": op["answers"]}}


def heldout_ll_accuracy(params: Any, model_config: ModelConfig, tokenizer: Any,
                        questions: Sequence[Any], batch_size: int = 8
                        ) -> Optional[float]:
  """Multiple-choice accuracy by log-likelihood of each choice after the chat prompt.

  Args:
    params: params pytree.
    model_config: the architecture.
    tokenizer: a TextTokenizer.
    questions: held-out questions (`qa.curated.HeldoutQuestion`: question, answer, choices).
    batch_size: sequences per forward.

  Returns:
    Accuracy, or None without questions.
  """
  if not questions:
    return None
  items = [multiple_choice.ScoringItem(
      tuple((chat_format.qa_prompt(tokenizer, q.question), choice) for choice in q.choices),
      q.choices.index(q.answer)) for q in questions]
  return multiple_choice.score_items(params, model_config, tokenizer, items,
                                     batch_size=batch_size)["accuracy"]


def heldout_generation_scores(params: Any, model_config: ModelConfig, tokenizer: Any,
                              questions: Sequence[Any], max_new_tokens: int = 24
                              ) -> dict[str, Any]:
  """Greedy closed-book answers scored by exact match and token F1.

  Args:
    params: params pytree.
    model_config: the architecture.
    tokenizer: a TextTokenizer.
    questions: held-out questions (`qa.curated.HeldoutQuestion`: question, answer).
    max_new_tokens: answer budget.

  Returns:
    {'em', 'f1' (means, None without questions), 'answers': [{question, gold, answer, em, f1}]}.
  """
  # The open-exam scorer with one accepted answer per question; the rows keep this function's
  # report shape (gold as a string, no containment or document).
  scored = score_open_exam(params, model_config, tokenizer,
                           [OpenQuestion(q.question, (q.answer,)) for q in questions],
                           max_new_tokens)
  answers = [{"question": row["question"], "gold": row["gold"][0], "answer": row["answer"],
              "em": row["em"], "f1": row["f1"]} for row in scored["answers"]]
  return {"em": scored["em"], "f1": scored["f1"], "answers": answers}


def evaluate_qa_model(loaded: Any, params: Any, questions: Sequence[Any],
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
