"""Tests for JSONL writing, document sharding and resumable streaming generation."""

import dataclasses
import json

import pytest

from penrose_jax.data import jsonl_files
from penrose_jax.qa import records
from penrose_jax.qa.records import QAPair


@dataclasses.dataclass
class FakeDoc:
  doc_id: str


def _gen(calls):
  def generate(doc):
    calls.append(doc.doc_id)
    n = int(doc.doc_id[1:]) % 3  # 0, 1 or 2 records
    return [QAPair(doc.doc_id, 'S', 0, f'Q{i}?', f'A{i}', 'R', 'rule') for i in range(n)]
  return generate


def test_write_jsonl_atomic_roundtrip(tmp_path):
  path = tmp_path / 'sub' / 'qa.jsonl'
  pairs = [QAPair('d', 'S', 0, 'Q?', 'Å 1 °C', 'R', 'rule'), {'doc_id': 'x', 'k': 1}]
  assert records.write_jsonl_atomic(path, pairs) == 2
  assert jsonl_files.read_jsonl(path)[1] == {'doc_id': 'x', 'k': 1}
  assert QAPair.from_json(jsonl_files.read_jsonl(path)[0]) == pairs[0]
  assert list(path.parent.iterdir()) == [path]  # no temp files left


def test_sharding_partitions_documents():
  docs = [FakeDoc(f'd{i}') for i in range(10)][::-1]
  shards = [records.shard_items(docs, i, 3) for i in range(3)]
  ids = [d.doc_id for shard in shards for d in shard]
  assert sorted(ids) == sorted(d.doc_id for d in docs) and len(set(ids)) == 10
  assert [len(s) for s in shards] == [4, 3, 3]
  with pytest.raises(ValueError):
    records.shard_items(docs, 3, 3)
  assert records.shard_output_path('o/qa.jsonl', 1, 4).name == 'qa-00001-of-00004.jsonl'
  assert records.shard_output_path('o/qa.jsonl', 0, 1).name == 'qa.jsonl'


def test_multi_process_generation_covers_corpus(tmp_path):
  docs = [FakeDoc(f'd{i}') for i in range(7)]
  paths = []
  for index in range(2):
    stats = records.generate_corpus_qa(docs, tmp_path / 'qa.jsonl', _gen([]), index, 2)
    paths.append(stats.output_path)
  pairs = records.read_qa_jsonl(paths)
  assert sorted({p.doc_id for p in pairs}) == ['d1', 'd2', 'd4', 'd5']
  assert len(pairs) == sum(i % 3 for i in range(7))


def test_resume_skips_finished_documents(tmp_path):
  docs = [FakeDoc(f'd{i}') for i in range(6)]
  out = tmp_path / 'qa.jsonl'
  calls = []
  records.generate_corpus_qa(docs[:4], out, _gen(calls))
  assert calls == ['d0', 'd1', 'd2', 'd3']
  calls.clear()
  stats = records.generate_corpus_qa(docs, out, _gen(calls))
  assert calls == ['d4', 'd5'] and stats.documents_skipped == 4
  assert len(records.read_qa_jsonl(out)) == sum(i % 3 for i in range(6))


def test_resume_after_kill_drops_partial_document_and_line(tmp_path):
  docs = [FakeDoc(f'd{i}') for i in range(6)]
  out = tmp_path / 'qa.jsonl'
  records.generate_corpus_qa(docs[:3], out, _gen([]))
  good = out.read_bytes()
  # Simulate a kill while writing d5: one full line, one partial line, no progress entry.
  line = QAPair('d5', 'S', 0, 'Q0?', 'A0', 'R', 'rule').to_json()
  with open(out, 'ab') as f:
    f.write((line + '\n' + line[:20]).encode())
  with open(out.with_name('qa.jsonl.progress'), 'ab') as f:
    f.write(b'{"doc_id": "d4", "end_')  # partial progress line too
  calls = []
  records.generate_corpus_qa(docs, out, _gen(calls))
  assert calls == ['d3', 'd4', 'd5']
  assert out.read_bytes().startswith(good)
  pairs = records.read_qa_jsonl(out)
  assert [p.doc_id for p in pairs].count('d5') == 2
  assert len(pairs) == sum(i % 3 for i in range(6))


def test_resume_without_progress_file(tmp_path):
  out = tmp_path / 'qa.jsonl'
  line = QAPair('d1', 'S', 0, 'Q?', 'A', 'R', 'rule').to_json()
  out.write_text(line + '\n' + line[:10])
  writer = records.ResumableJsonlWriter(out)
  assert writer.is_done('d1') and not writer.is_done('d2')
  assert out.read_text() == line + '\n'
  writer.write_document('d2', [])
  assert writer.is_done('d2')
  reopened = records.ResumableJsonlWriter(out)
  assert reopened.is_done('d1') and reopened.is_done('d2')


def test_read_jsonl_names_bad_line(tmp_path):
  path = tmp_path / 'x.jsonl'
  path.write_text('{"a": 1}\n{bad\n{"b": 2}\n')
  with pytest.raises(ValueError, match=':2: invalid JSON'):
    jsonl_files.read_jsonl(path)
  path.write_text(json.dumps({'a': 1}) + '\n{"par')
  assert jsonl_files.read_jsonl(path) == [{'a': 1}]
