"""Curated Q&A (training) and held-out multiple-choice questions from JSONL files.

Curated training lines: {doc_id, section, question, answer, reasoning} (+ optional
section_order). Held-out lines additionally need `choices`: 4 distinct strings, one of them the
answer. Every problem raises `CuratedQAError` naming the file and line number.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Sequence

from penrose_jax.data.ingest import Document
from penrose_jax.data.jsonl_files import read_json_objects
from penrose_jax.qa.records import QAPair

CURATED_FIELDS = ('doc_id', 'section', 'question', 'answer', 'reasoning')


class CuratedQAError(ValueError):
  """A curated JSONL file has an invalid line."""


@dataclasses.dataclass(frozen=True)
class HeldoutQuestion:
  """A held-out multiple-choice question (never used for training)."""
  doc_id: str
  section: str
  question: str
  answer: str
  choices: tuple[str, ...]
  reasoning: str

  @property
  def answer_index(self) -> int:
    """Index of the answer in `choices`."""
    return self.choices.index(self.answer)


def _read_objects(path: pathlib.Path, required: Sequence[str]) -> list[tuple[int, dict]]:
  out = []
  for number, obj in read_json_objects(path, CuratedQAError):
    missing = [k for k in required if k not in obj]
    if missing:
      raise CuratedQAError(f'{path}:{number}: missing field(s) {", ".join(missing)}')
    for key in required:
      if key == 'choices':
        continue
      if not isinstance(obj[key], str) or not obj[key].strip():
        raise CuratedQAError(f'{path}:{number}: field {key!r} must be a non-empty string')
    out.append((number, obj))
  return out


def _section_orders(documents: Sequence[Document] | None) -> dict[tuple[str, str], int]:
  orders: dict[tuple[str, str], int] = {}
  for document in documents or ():
    for section in document.sections:
      orders.setdefault((document.doc_id, section.title.lower()), section.order)
  return orders


def load_curated_qa(path: str | pathlib.Path,
                    documents: Sequence[Document] | None = None) -> list[QAPair]:
  """Reads curated training Q&A.

  Args:
    path: JSONL file.
    documents: if given, `section` must name a section of `doc_id` (case-insensitive) and its
      order is filled in; otherwise `section_order` comes from the line or is -1.

  Returns:
    QAPairs with source 'curated'.

  Raises:
    CuratedQAError: naming the line of the first invalid entry.
  """
  path = pathlib.Path(path)
  orders = _section_orders(documents)
  pairs = []
  for number, obj in _read_objects(path, CURATED_FIELDS):
    order = obj.get('section_order', -1)
    if documents is not None:
      key = (obj['doc_id'], obj['section'].lower())
      if key not in orders:
        raise CuratedQAError(f'{path}:{number}: no section {obj["section"]!r} in document '
                             f'{obj["doc_id"]!r}')
      order = orders[key]
    if not isinstance(order, int):
      raise CuratedQAError(f'{path}:{number}: section_order must be an integer')
    pairs.append(QAPair(obj['doc_id'], obj['section'], order, obj['question'], obj['answer'],
                        obj['reasoning'], 'curated'))
  return pairs


def load_heldout_questions(path: str | pathlib.Path) -> list[HeldoutQuestion]:
  """Reads held-out multiple-choice questions.

  Args:
    path: JSONL file with CURATED_FIELDS + 'choices'.

  Returns:
    The questions in file order.

  Raises:
    CuratedQAError: naming the line of the first invalid entry (bad choices included).
  """
  path = pathlib.Path(path)
  out = []
  for number, obj in _read_objects(path, CURATED_FIELDS + ('choices',)):
    choices: Any = obj['choices']
    if (not isinstance(choices, list) or len(choices) != 4 or
        not all(isinstance(c, str) and c.strip() for c in choices)):
      raise CuratedQAError(f'{path}:{number}: choices must be a list of 4 non-empty strings')
    if len(set(choices)) != 4:
      raise CuratedQAError(f'{path}:{number}: choices must be distinct')
    if obj['answer'] not in choices:
      raise CuratedQAError(f'{path}:{number}: answer is not one of the choices')
    out.append(HeldoutQuestion(obj['doc_id'], obj['section'], obj['question'], obj['answer'],
                               tuple(choices), obj['reasoning']))
  return out
