"""Q&A records, JSONL writing, and the resumable, document-sharded streaming writer.

Resumable writer contract (`ResumableJsonlWriter`):
  * records of one document are written in one `write` followed by flush + fsync;
  * a sidecar `<output>.progress` JSONL gets one line per finished document
    ({doc_id, end_offset, count}), also fsynced, *after* the document's records;
  * on reopen the progress file's partial last line is dropped and the output is truncated to
    the last finished document's end offset, which drops a half-written document and a partial
    last line after a kill; finished doc_ids are skipped by `generate_corpus_qa`;
  * without a progress file (output written by something else) the output's partial last line
    is dropped and every doc_id present in it counts as finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
from typing import Any, Callable, Iterable, Iterator, Sequence, TypeVar

from penrose_jax.data.jsonl_files import read_jsonl
from penrose_jax.reporting import report_json

QA_SOURCES = ('model', 'rule', 'curated', 'sofc_tasks', 'study', 'recall')
T = TypeVar('T')


def make_qa_id(doc_id: str, section_order: int, question: str, answer: str) -> str:
  """Deterministic 16-hex-digit id of a Q&A pair."""
  key = '\x1f'.join([doc_id, str(section_order), question, answer])
  return hashlib.sha1(key.encode('utf-8')).hexdigest()[:16]


@dataclasses.dataclass(frozen=True)
class QAPair:
  """One question/answer pair with a short reasoning trace, tied to a document section."""
  doc_id: str
  section: str
  section_order: int
  question: str
  answer: str
  reasoning: str
  source: str
  qa_id: str = ''

  def __post_init__(self):
    if self.source not in QA_SOURCES:
      raise ValueError(f'source must be one of {QA_SOURCES}, got {self.source!r}')
    if not self.qa_id:
      object.__setattr__(self, 'qa_id', make_qa_id(self.doc_id, self.section_order,
                                                   self.question, self.answer))

  def to_json(self) -> str:
    """Returns a one-line JSON object with all fields."""
    return json.dumps(dataclasses.asdict(self), ensure_ascii=False)

  @classmethod
  def from_json(cls, line: str | dict[str, Any]) -> 'QAPair':
    """Parses `to_json` output (a string or an already-decoded dict)."""
    data = json.loads(line) if isinstance(line, str) else dict(line)
    names = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


def _as_line(record: Any) -> str:
  if isinstance(record, QAPair):
    return record.to_json()
  if dataclasses.is_dataclass(record):
    return json.dumps(dataclasses.asdict(record), ensure_ascii=False)
  return json.dumps(record, ensure_ascii=False)


def write_jsonl_atomic(path: str | pathlib.Path, records: Iterable[Any]) -> int:
  """Writes records (QAPair, dataclasses or dicts) as JSONL via temp file + fsync + rename.

  Args:
    path: destination; parents are created.
    records: the records.

  Returns:
    The number of records written.
  """
  lines = [_as_line(record) + "\n" for record in records]
  report_json.write_text_atomic(path, "".join(lines))
  return len(lines)


def read_qa_jsonl(paths: str | pathlib.Path | Sequence[str | pathlib.Path]) -> list[QAPair]:
  """Reads QAPair records from one JSONL file or several (e.g. per-process shards)."""
  if isinstance(paths, (str, pathlib.Path)):
    paths = [paths]
  return [QAPair.from_json(d) for p in paths for d in read_jsonl(p)]


def shard_items(items: Sequence[T], process_index: int, process_count: int,
                key: Callable[[T], str] = lambda d: getattr(d, 'doc_id')) -> list[T]:
  """Round-robin shard of items sorted by key: item i (in key order) goes to i % process_count.

  Args:
    items: e.g. documents.
    process_index: this process (e.g. jax.process_index()).
    process_count: number of processes (e.g. jax.process_count()).
    key: sort key (doc_id by default), so every process computes the same assignment.

  Returns:
    The items of this process, in key order.
  """
  if not 0 <= process_index < process_count:
    raise ValueError(f'process_index {process_index} not in [0, {process_count})')
  ordered = sorted(items, key=key)
  return [item for i, item in enumerate(ordered) if i % process_count == process_index]


def shard_output_path(path: str | pathlib.Path, process_index: int,
                      process_count: int) -> pathlib.Path:
  """'qa.jsonl' -> 'qa-00001-of-00004.jsonl' when process_count > 1 (unchanged otherwise)."""
  path = pathlib.Path(path)
  if process_count == 1:
    return path
  return path.with_name(f'{path.stem}-{process_index:05d}-of-{process_count:05d}{path.suffix}')


def _truncate_partial_line(path: pathlib.Path) -> None:
  data = path.read_bytes()
  if data and not data.endswith(b'\n'):
    with open(path, 'r+b') as f:
      f.truncate(data.rfind(b'\n') + 1)


class ResumableJsonlWriter:
  """Append-only JSONL writer, one fsynced block per document, resumable after a kill."""

  def __init__(self, path: str | pathlib.Path):
    """Opens (or resumes) `path`; see the module docstring for the recovery rules.

    Args:
      path: the output JSONL file; its progress file is `path + '.progress'`.
    """
    self.path = pathlib.Path(path)
    self.progress_path = self.path.with_name(self.path.name + '.progress')
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self.completed: dict[str, int] = {}
    if self.progress_path.exists():
      _truncate_partial_line(self.progress_path)
      end = 0
      for entry in read_jsonl(self.progress_path):
        self.completed[entry['doc_id']] = entry['count']
        end = entry['end_offset']
      size = self.path.stat().st_size if self.path.exists() else 0
      if size < end:
        raise ValueError(f'{self.path} is shorter ({size} bytes) than its progress file says '
                         f'({end}); refusing to resume')
      with open(self.path, 'ab') as f:
        f.truncate(end)
    elif self.path.exists():
      _truncate_partial_line(self.path)
      for record in read_jsonl(self.path):
        self.completed[record['doc_id']] = self.completed.get(record['doc_id'], 0) + 1
      for doc_id, count in self.completed.items():
        self._append_progress(doc_id, self.path.stat().st_size, count)

  def is_done(self, doc_id: str) -> bool:
    """True if the document's records were fully written before."""
    return doc_id in self.completed

  def _append_progress(self, doc_id: str, end_offset: int, count: int) -> None:
    with open(self.progress_path, 'a', encoding='utf-8') as f:
      f.write(json.dumps({'doc_id': doc_id, 'end_offset': end_offset, 'count': count}) + '\n')
      f.flush()
      os.fsync(f.fileno())

  def write_document(self, doc_id: str, records: Sequence[Any]) -> None:
    """Appends all records of one document (may be empty), then marks it finished.

    Args:
      doc_id: the document id.
      records: its records.
    """
    block = ''.join(_as_line(r) + '\n' for r in records).encode('utf-8')
    with open(self.path, 'ab') as f:
      f.write(block)
      f.flush()
      os.fsync(f.fileno())
      end = f.tell()
    self._append_progress(doc_id, end, len(records))
    self.completed[doc_id] = len(records)


@dataclasses.dataclass
class GenerationStats:
  """What one `generate_corpus_qa` call did."""
  output_path: str
  documents_assigned: int = 0
  documents_skipped: int = 0
  documents_written: int = 0
  records_written: int = 0


def generate_corpus_qa(documents: Sequence[Any], output_path: str | pathlib.Path,
                       generate: Callable[[Any], Sequence[Any]], process_index: int = 0,
                       process_count: int = 1,
                       on_document: Callable[[str, int], None] | None = None
                       ) -> GenerationStats:
  """Streams Q&A generation over this process's shard of documents, resuming finished ones.

  Args:
    documents: objects with a `doc_id` (e.g. `ingest.Document`).
    output_path: base output path; with process_count > 1 each process writes its own
      `shard_output_path(output_path, process_index, process_count)`.
    generate: document -> records (QAPair or dicts) for that document.
    process_index: this process, e.g. jax.process_index().
    process_count: number of processes, e.g. jax.process_count().
    on_document: optional callback(doc_id, n_records) after each written document.

  Returns:
    `GenerationStats`.
  """
  path = shard_output_path(output_path, process_index, process_count)
  writer = ResumableJsonlWriter(path)
  mine = shard_items(documents, process_index, process_count)
  stats = GenerationStats(str(path), documents_assigned=len(mine))
  for document in mine:
    if writer.is_done(document.doc_id):
      stats.documents_skipped += 1
      continue
    records = list(generate(document))
    writer.write_document(document.doc_id, records)
    stats.documents_written += 1
    stats.records_written += len(records)
    if on_document:
      on_document(document.doc_id, len(records))
  return stats


def iter_sections(documents: Iterable[Any]) -> Iterator[Any]:
  """Yields every section of every document in order."""
  for document in documents:
    yield from document.sections
