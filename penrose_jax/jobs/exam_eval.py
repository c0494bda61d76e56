"""A user's closed-book exam inside qa_tune: read it, score before / after, cache "before".

The exam fields of a qa_tune config: `exam_path` (multiple-choice JSONL files, comma-separated),
`open_exam_path` (open-question JSONL files), `exam_cache_dir` (a folder shared by runs; ''
= none). Questions are read (and checked: `evaluation.exam_files.ExamError` names file and
line) before any Q&A generation or training, doc_ids against the whole corpus. Questions about
documents that the run does not train on (`documents` / `max_documents` selections) are left out
of the scores and counted in the report (`exam_questions_excluded`), never dropped silently.

The "before" scores of a model depend only on the model, the questions and the scoring settings,
so they are cached in DIR/exam_before.json and, with `exam_cache_dir`, in that folder under a
key of (model identity, exam content, settings): sibling runs of a sweep (modes, learning rates)
score the base model once.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any, Optional, Sequence

import ml_collections

from penrose_jax.data import paths
from penrose_jax.data import ingest
from penrose_jax.evaluation import closed_book, exam_files
from penrose_jax.models.linear import dense_equivalent
from penrose_jax.reporting import report_json

SCALAR_KEYS = ("exam_accuracy_sum", "exam_accuracy_mean", "exam_em", "exam_f1",
               "exam_contains", "exam_by_doc")


class RunExam:
  """The exam questions of one run and the ones left out (documents not trained)."""

  def __init__(self, choice: list[exam_files.ChoiceQuestion], open_: list[exam_files.OpenQuestion],
               excluded: int, note: str):
    self.choice, self.open, self.excluded, self.note = choice, open_, excluded, note

  def __bool__(self) -> bool:
    return bool(self.choice or self.open)


def load_run_exam(config: ml_collections.ConfigDict, documents: Sequence[ingest.Document]
                  ) -> RunExam:
  """Reads the configured exam and keeps the questions about the run's documents.

  Args:
    config: a qa_tune config (exam_path, open_exam_path, corpus; '' paths = no exam).
    documents: the documents this run trains on.

  Returns:
    RunExam (empty when no exam is configured).

  Raises:
    exam_files.ExamError: an unusable question (file and line named).
  """
  choice_spec, open_spec = config.get("exam_path", ""), config.get("open_exam_path", "")
  if not exam_files.split_paths(choice_spec) and not exam_files.split_paths(open_spec):
    return RunExam([], [], 0, "")
  trained = {d.doc_id for d in documents}
  # doc_ids are checked against the whole corpus, so a typo is an error even when the run
  # trains on a subset.
  corpus_ids, _ = ingest.load_corpus(paths.resolve_data_path(config.corpus))
  choice, open_ = exam_files.load_exams(choice_spec, open_spec, {d.doc_id for d in corpus_ids})
  keep = lambda q: not q.doc_id or q.doc_id in trained
  kept_choice, kept_open = [q for q in choice if keep(q)], [q for q in open_ if keep(q)]
  excluded = len(choice) + len(open_) - len(kept_choice) - len(kept_open)
  note = ""
  if excluded:
    others = sorted({q.doc_id for q in list(choice) + list(open_) if not keep(q)})
    note = (f"{excluded} exam questions are about documents this run does not train on "
            f"({', '.join(others)}); not scored")
  return RunExam(kept_choice, kept_open, excluded, note)


def _model_identity(spec: str) -> list[Any]:
  """The model spec plus what changes when the file behind it changes."""
  path = pathlib.Path(spec).expanduser()
  if path.is_file():
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]
  if (path / "model.json").is_file():
    return [str(path.resolve()), hashlib.sha1((path / "model.json").read_bytes()).hexdigest()]
  return [spec]


def score(loaded: Any, params: Any, run_exam: RunExam, eval_config: ml_collections.ConfigDict
          ) -> dict[str, Any]:
  """The exam scores of one set of params.

  Args:
    loaded: model_registry.Loaded (config and tokenizer are used).
    params: the params (compressed / LoRA leaves are scored through their dense equivalent).
    run_exam: the questions.
    eval_config: needs batch_size, answer_max_new_tokens.

  Returns:
    `evaluation.closed_book.evaluate_exam`'s dict.
  """
  return closed_book.evaluate_exam(dense_equivalent(params), loaded.config, loaded.tokenizer,
                                   run_exam.choice, run_exam.open, eval_config.batch_size,
                                   eval_config.answer_max_new_tokens)


def score_before(loaded: Any, params: Any, run_exam: RunExam,
                 config: ml_collections.ConfigDict, workdir: pathlib.Path,
                 log: Any = print) -> dict[str, Any]:
  """The base model's exam scores, from a cache when the same model and exam were scored.

  Args:
    loaded: model_registry.Loaded.
    params: the base params.
    run_exam: the questions.
    config: the qa_tune config (model, eval.batch_size, eval.answer_max_new_tokens,
      exam_cache_dir).
    workdir: the run's folder (DIR/exam_before.json).
    log: progress printer.

  Returns:
    `evaluation.closed_book.evaluate_exam`'s dict.
  """
  key = hashlib.sha1(json.dumps([
      _model_identity(config.model), exam_files.exam_fingerprint(run_exam.choice, run_exam.open),
      config.eval.batch_size, config.eval.answer_max_new_tokens]).encode()).hexdigest()
  cache_dir = config.get("exam_cache_dir", "")
  files = [workdir / "exam_before.json"]
  if cache_dir:
    files.append(pathlib.Path(cache_dir).expanduser() / f"exam_before_{key[:20]}.json")
  for file in files:
    if file.is_file():
      try:
        stored = json.loads(file.read_text())
      except json.JSONDecodeError:  # a torn file from another writer: score again
        continue
      if stored.get("key") == key:
        log(f"exam before: reusing {file}")
        for other in files:
          if other != file and not other.is_file():
            report_json.write_json_atomic(other, stored)
        return stored["metrics"]
  metrics = score(loaded, params, run_exam, config.eval)
  for file in files:
    report_json.write_json_atomic(file, {"key": key, "model": config.model, "metrics": metrics})
  return metrics


def report_fields(run_exam: RunExam, before: Optional[dict], after: Optional[dict]
                  ) -> dict[str, Any]:
  """The report.json keys of the exam ({} without an exam).

  Args:
    run_exam: the questions.
    before: scores before training (None when evaluation is off).
    after: scores after training.

  Returns:
    exam_questions, open_exam_questions, exam_questions_excluded and, for each of
    SCALAR_KEYS, KEY_before / KEY_after.
  """
  if not run_exam:
    return {}
  out: dict[str, Any] = {"exam_questions": len(run_exam.choice),
                         "open_exam_questions": len(run_exam.open),
                         "exam_questions_excluded": run_exam.excluded}
  for key in SCALAR_KEYS:
    out[f"{key}_before"] = None if before is None else before[key]
    out[f"{key}_after"] = None if after is None else after[key]
  return out
