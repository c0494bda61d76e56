"""Tests for the array_record TFDS corpus builder (no TensorFlow)."""

import sys

from penrose_jax.qa import tfds_corpus
from penrose_jax.qa import ingest, records
from penrose_jax.qa.records import QAPair


def test_build_and_read_back_without_tensorflow(tmp_path):
  corpus = tmp_path / 'corpus'
  corpus.mkdir()
  (corpus / 'b.md').write_text('# Doc B\n## One\nÅngström text.\n## Two\nMore text.\n')
  (corpus / 'a.txt').write_text('Title A\nIntroduction Alpha text here.\nResults Beta.\n')
  pairs = [QAPair('b', 'Two', 1, f'Q{i}?', f'A{i}', 'R', 'rule') for i in range(5)]
  pairs.append(QAPair('a', 'Results', 1, 'Q°?', 'A°', 'R', 'curated'))
  qa_path = tmp_path / 'qa.jsonl'
  records.write_jsonl_atomic(qa_path, pairs)

  builders = tfds_corpus.build_corpus_dataset(corpus, qa_path, tmp_path / 'tfds')
  documents, _ = ingest.load_corpus(corpus)
  expected_sections = [
      {'doc_id': d.doc_id, 'doc_title': d.title, 'order': s.order, 'title': s.title,
       'text': s.text} for d in documents for s in d.sections]
  assert tfds_corpus.read_sections(builders['sections']) == expected_sections
  assert [QAPair.from_json(r) for r in tfds_corpus.read_qa(builders['qa'])] == pairs
  files = list((tmp_path / 'tfds').rglob('*.array_record*'))
  assert len(files) == 2

  reopened = tfds_corpus.load_prepared(tmp_path / 'tfds', 'qa')
  assert str(reopened.version) == '1.0.0'
  assert len(tfds_corpus.read_qa(reopened)) == len(pairs)
  assert 'tensorflow' not in sys.modules
