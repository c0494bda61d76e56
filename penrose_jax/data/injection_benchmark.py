"""The team's knowledge-injection benchmark, shipped as package data (penrose_jax/data/injection/).

Eight invented materials-science documents (Markdown, `#` title, 4 `##` sections each: fictional
compounds, devices, institutes, people and numbers with units, so no model can know the facts
before training) and two exams of the same 56 facts, 7 per document:

  * `exam_choice.jsonl`: four-way multiple-choice questions {question, choices, gold (index),
    doc_id}; the questions paraphrase the documents (no sentence is copied) and the distractors
    have the type and unit of the answer;
  * `exam_open.jsonl`: the same questions as open questions {question, answer, doc_id}.

The exam files are never a training source: `load_corpus` reads only document extensions, and
tests/test_qa_injection_benchmark.py checks that no 8-word run of an exam question occurs in the
documents or in the Q&A the package generates from them. Config specs:
`package:injection_corpus`, `package:injection_exam`, `package:injection_open_exam`
(`data.paths.PACKAGED`). Packaging needs package_data {'penrose_jax.data': ['injection/*.md',
'injection/*.jsonl']}.
"""

from __future__ import annotations

import pathlib

from penrose_jax.data import paths

CHOICE_EXAM_FILE = "exam_choice.jsonl"
OPEN_EXAM_FILE = "exam_open.jsonl"


def corpus_dir() -> pathlib.Path:
  """Path of the shipped injection corpus folder (documents and the two exam files).

  Returns:
    The folder.

  Raises:
    FileNotFoundError: when the package data is not installed.
  """
  path = paths.packaged_path("injection_corpus")
  if not path.is_dir():
    raise FileNotFoundError(f"injection corpus not found at {path}; is package data installed?")
  return path


def choice_exam_path() -> pathlib.Path:
  """Path of the multiple-choice exam of the injection corpus."""
  return corpus_dir() / CHOICE_EXAM_FILE


def open_exam_path() -> pathlib.Path:
  """Path of the open-question exam of the injection corpus."""
  return corpus_dir() / OPEN_EXAM_FILE
