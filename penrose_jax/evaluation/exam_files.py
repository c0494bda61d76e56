"""A user's own closed-book exam: the JSONL readers (multiple choice and open questions).

Multiple-choice lines: {"question": str, "choices": [str, ...] (>= 2, distinct), "gold": int
index or the answer string, "doc_id": str (optional)}. The held-out format of the demo corpus
(`answer` instead of `gold`, plus `section` / `reasoning`) is read too; other fields are ignored.
Open lines: {"question": str, "answer": str or [str, ...] (accepted answers), "doc_id": str
(optional)}. A path field may name several files, comma-separated.

Every unusable line (bad JSON, missing or empty field, gold out of range or not a choice, a
doc_id naming no document when the corpus is known) raises `ExamError` naming the file and line:
a question dropped silently would change the denominator without anyone noticing.

Scoring is `evaluation.closed_book` (`evaluate_exam`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import pathlib
from typing import Collection, Optional, Sequence

from penrose_jax.data import ingest, jsonl_files, paths


class ExamError(ValueError):
  """An exam file has a line that cannot be used (the message names file and line)."""


@dataclasses.dataclass(frozen=True)
class ChoiceQuestion:
  """A multiple-choice exam question.

  Attributes:
    question: the question text.
    choices: the candidate answers.
    gold: index of the right choice.
    doc_id: the document the fact comes from ('' = unknown).
    where: 'file:line' it was read from.
  """

  question: str
  choices: tuple[str, ...]
  gold: int
  doc_id: str = ""
  where: str = ""


@dataclasses.dataclass(frozen=True)
class OpenQuestion:
  """An open exam question with its accepted answers (scored by the best match)."""

  question: str
  answers: tuple[str, ...]
  doc_id: str = ""
  where: str = ""


def _objects(path: pathlib.Path) -> list[tuple[int, dict]]:
  """(line number, object) for every non-blank line; bad JSON / non-objects raise ExamError."""
  if path.is_dir():
    raise ExamError(f"{path}: is a folder; an exam is a JSONL file (one question per line)")
  if not path.is_file():
    raise ExamError(f"{path}: exam file not found")
  out = jsonl_files.read_json_objects(path, ExamError)
  if not out:
    raise ExamError(f"{path}: no questions")
  return out


def _text(obj: dict, key: str, where: str) -> str:
  if key not in obj:
    raise ExamError(f"{where}: missing field {key!r}")
  value = obj[key]
  if not isinstance(value, str) or not value.strip():
    raise ExamError(f"{where}: field {key!r} must be a non-empty string")
  return value.strip()


def _doc_id(obj: dict, where: str, doc_ids: Optional[Collection[str]]) -> str:
  value = obj.get("doc_id", "")
  if value is None:
    value = ""
  if not isinstance(value, str):
    raise ExamError(f"{where}: field 'doc_id' must be a string")
  value = value.strip()
  if value and doc_ids is not None and value not in doc_ids:
    known = ", ".join(sorted(doc_ids)[:8]) + (", ..." if len(doc_ids) > 8 else "")
    raise ExamError(f"{where}: doc_id {value!r} names no document of the corpus ({known})")
  return value


def _gold_index(obj: dict, choices: list[str], where: str) -> int:
  if "gold" in obj:
    gold = obj["gold"]
  elif "answer" in obj:  # the held-out format: the answer string is one of the choices
    gold = obj["answer"]
  else:
    raise ExamError(f"{where}: missing field 'gold' (choice index or answer string)")
  if isinstance(gold, bool):  # bool is an int in Python; true/false is never an index
    raise ExamError(f"{where}: gold must be a choice index or the answer string, got {gold}")
  if isinstance(gold, int):
    if not 0 <= gold < len(choices):
      raise ExamError(f"{where}: gold={gold} outside 0..{len(choices) - 1}")
    return gold
  if isinstance(gold, str):
    if gold.strip() not in choices:
      raise ExamError(f"{where}: gold answer {gold!r} is not one of the choices")
    return choices.index(gold.strip())
  raise ExamError(f"{where}: gold must be an integer index or a string, got "
                  f"{type(gold).__name__}")


def read_choice_exam(path: str | pathlib.Path, doc_ids: Optional[Collection[str]] = None
                     ) -> list[ChoiceQuestion]:
  """Reads a multiple-choice exam JSONL file.

  Args:
    path: the file.
    doc_ids: the corpus's document ids; when given, a doc_id outside them is an error.

  Returns:
    The questions in file order.

  Raises:
    ExamError: naming the file and line of the first unusable question.
  """
  path = pathlib.Path(path)
  out = []
  for number, obj in _objects(path):
    where = f"{path}:{number}"
    question = _text(obj, "question", where)
    if "choices" not in obj:
      raise ExamError(f"{where}: missing field 'choices'")
    choices = obj["choices"]
    if not isinstance(choices, list) or len(choices) < 2:
      raise ExamError(f"{where}: choices must be a list of at least 2 strings")
    if not all(isinstance(c, str) and c.strip() for c in choices):
      raise ExamError(f"{where}: every choice must be a non-empty string")
    choices = [c.strip() for c in choices]
    if len(set(choices)) != len(choices):
      raise ExamError(f"{where}: choices must be distinct")
    gold = _gold_index(obj, choices, where)
    out.append(ChoiceQuestion(question, tuple(choices), gold, _doc_id(obj, where, doc_ids),
                              where))
  return out


def read_open_exam(path: str | pathlib.Path, doc_ids: Optional[Collection[str]] = None
                   ) -> list[OpenQuestion]:
  """Reads an open-question exam JSONL file.

  Args:
    path: the file.
    doc_ids: the corpus's document ids; when given, a doc_id outside them is an error.

  Returns:
    The questions in file order.

  Raises:
    ExamError: naming the file and line of the first unusable question.
  """
  path = pathlib.Path(path)
  out = []
  for number, obj in _objects(path):
    where = f"{path}:{number}"
    question = _text(obj, "question", where)
    if "answer" not in obj:
      raise ExamError(f"{where}: missing field 'answer'")
    answers = obj["answer"] if isinstance(obj["answer"], list) else [obj["answer"]]
    if not answers or not all(isinstance(a, str) and a.strip() for a in answers):
      raise ExamError(f"{where}: answer must be a non-empty string or a list of them")
    out.append(OpenQuestion(question, tuple(a.strip() for a in answers),
                            _doc_id(obj, where, doc_ids), where))
  return out


def split_paths(spec: str) -> list[str]:
  """The paths of a comma-separated config field ('' = none).

  Args:
    spec: e.g. 'exam_a.jsonl,exam_b.jsonl'.

  Returns:
    The non-empty, stripped parts.
  """
  return [part.strip() for part in (spec or "").split(",") if part.strip()]


def exam_fingerprint(choice_questions: Sequence[ChoiceQuestion],
                     open_questions: Sequence[OpenQuestion]) -> str:
  """A hash of the questions' content (not of where they were read), for caching results.

  Args:
    choice_questions: multiple-choice questions.
    open_questions: open questions.

  Returns:
    A hex digest.
  """
  content = [[q.question, list(q.choices), q.gold, q.doc_id] for q in choice_questions]
  content += [[q.question, list(q.answers), q.doc_id] for q in open_questions]
  return hashlib.sha1(json.dumps(content).encode()).hexdigest()


def load_exams(choice_spec: str, open_spec: str, doc_ids: Optional[Collection[str]] = None
               ) -> tuple[list[ChoiceQuestion], list[OpenQuestion]]:
  """Reads every file of the two comma-separated config fields.

  Args:
    choice_spec: multiple-choice exam paths, comma-separated ('' = none); each path as in a
      config (`data.paths.resolve_data_path`: 'package:injection_exam', ../shared, a file).
    open_spec: open-question exam paths, comma-separated ('' = none).
    doc_ids: the corpus's document ids, or None to accept any doc_id.

  Returns:
    (multiple-choice questions, open questions).

  Raises:
    ExamError: for a missing file or an unusable line.
  """
  resolve = paths.resolve_data_path
  choice = [q for spec in split_paths(choice_spec)
            for q in read_choice_exam(resolve(spec), doc_ids)]
  open_ = [q for spec in split_paths(open_spec) for q in read_open_exam(resolve(spec), doc_ids)]
  return choice, open_


def corpus_doc_ids(corpus_spec: str) -> Optional[set[str]]:
  """The document ids of a corpus, to check an exam's doc_ids against ('' = no check).

  Args:
    corpus_spec: a corpus path as in a config ('package:injection_corpus', a folder, a file).

  Returns:
    The set of doc_ids (file stems), or None for ''.

  Raises:
    FileNotFoundError: when the corpus does not exist.
  """
  if not corpus_spec:
    return None
  documents, _ = ingest.load_corpus(paths.resolve_data_path(corpus_spec))
  return {d.doc_id for d in documents}
