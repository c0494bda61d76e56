"""Tests for the shipped demo corpus, its held-out and curated Q&A files."""

import collections

from penrose_jax.data import demo_corpus, ingest
from penrose_jax.qa import curated, filtering, generate_rules


def _load():
  documents, problems = ingest.load_corpus(demo_corpus.demo_corpus_dir())
  assert problems == []
  return documents


def test_demo_documents_shape():
  documents = _load()
  assert len(documents) >= 12
  for document in documents:
    words = sum(len(s.text.split()) for s in document.sections)
    assert 3 <= len(document.sections) <= 6, document.doc_id
    assert 150 <= words <= 400, (document.doc_id, words)
    assert document.title


def test_heldout_questions_answerable_from_their_section():
  documents = _load()
  texts = {(d.doc_id, s.title): s.text for d in documents for s in d.sections}
  questions = curated.load_heldout_questions(demo_corpus.demo_heldout_path())
  per_doc = collections.Counter(q.doc_id for q in questions)
  assert set(per_doc) == {d.doc_id for d in documents}
  assert min(per_doc.values()) >= 3
  assert len({q.answer_index for q in questions}) == 4  # answer position varies
  for q in questions:
    assert filtering.answer_supported(q.answer, texts[(q.doc_id, q.section)]), q.question


def test_curated_training_qa_disjoint_from_heldout():
  documents = _load()
  pairs = curated.load_curated_qa(demo_corpus.demo_curated_path(), documents)
  heldout = curated.load_heldout_questions(demo_corpus.demo_heldout_path())
  held_keys = {filtering.question_key(q.question) for q in heldout}
  rule_pairs = [p for d in documents for p in generate_rules.generate_document_qa(d)]
  assert rule_pairs
  for pair in pairs + rule_pairs:
    assert filtering.question_key(pair.question) not in held_keys
  assert {p.doc_id for p in pairs} == {d.doc_id for d in documents}
