"""TFDS dataset (array_record, no TensorFlow) of corpus sections and Q&A pairs.

One builder, two configs:
  * 'sections': doc_id, doc_title, order, title, text (one example per section);
  * 'qa': qa_id, doc_id, section, section_order, question, answer, reasoning, source.
Both have a single 'train' split, are written as array_record with shuffling disabled (examples
keep corpus order) and are read with `builder.as_data_source()` (random access, no tf.data).
TensorFlow is not needed at build or read time in tensorflow-datasets 4.9.10: the generation
path serialises with tfds' own example serializer and the array_record writer, and
`as_data_source` decodes with the numpy example parser. (tfds 4.9.10 does need the undeclared
`importlib_resources` package in `DatasetBuilder.code_path` for builders defined in a package;
`CorpusQa` overrides `code_path` so that package is not needed.)
"""

from __future__ import annotations

import pathlib
from typing import Any, Iterator

from etils import epath
import numpy as np
import tensorflow_datasets as tfds

from penrose_jax.qa import ingest
from penrose_jax.qa.records import read_qa_jsonl

DATASET_VERSION = '1.0.0'
_TEXT_FIELDS = {
    'sections': ('doc_id', 'doc_title', 'title', 'text'),
    'qa': ('qa_id', 'doc_id', 'section', 'question', 'answer', 'reasoning', 'source'),
}


class CorpusQa(tfds.core.GeneratorBasedBuilder):
  """Sections of a document corpus ('sections' config) and their Q&A pairs ('qa' config)."""

  VERSION = tfds.core.Version(DATASET_VERSION)
  RELEASE_NOTES = {DATASET_VERSION: 'Sections and Q&A pairs of a document folder.'}
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name='sections', description='One example per section.'),
      tfds.core.BuilderConfig(name='qa', description='One example per Q&A pair.'),
  ]

  # tfds 4.9.10's default `code_path` touches the undeclared `importlib_resources` package for
  # builders defined inside a package; the file path is all it needs (checksums lookup).
  @tfds.core.utils.classproperty
  @classmethod
  def code_path(cls) -> epath.Path:  # pytype: disable=signature-mismatch
    return epath.Path(__file__)

  def __init__(self, *, corpus_dir: str | None = None, qa_jsonl: str | None = None,
               **kwargs: Any):
    """Args: corpus_dir / qa_jsonl: sources (needed only to build); kwargs: tfds arguments."""
    self._corpus_dir = corpus_dir
    self._qa_jsonl = qa_jsonl
    super().__init__(**kwargs)

  def _info(self) -> tfds.core.DatasetInfo:
    text = tfds.features.Text()
    if self.builder_config.name == 'sections':
      features = {'doc_id': text, 'doc_title': text, 'order': np.int32, 'title': text,
                  'text': text}
    else:
      features = {'qa_id': text, 'doc_id': text, 'section': text, 'section_order': np.int32,
                  'question': text, 'answer': text, 'reasoning': text, 'source': text}
    return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(features),
                                 disable_shuffling=True)

  def _split_generators(self, dl_manager):
    del dl_manager
    return {'train': self._generate_examples()}

  def _generate_examples(self) -> Iterator[tuple[str, dict[str, Any]]]:
    if self.builder_config.name == 'sections':
      if not self._corpus_dir:
        raise ValueError('corpus_dir is required to build the sections config')
      documents, _ = ingest.load_corpus(self._corpus_dir)
      for document in documents:
        for section in document.sections:
          yield f'{document.doc_id}/{section.order:05d}', {
              'doc_id': document.doc_id, 'doc_title': document.title, 'order': section.order,
              'title': section.title, 'text': section.text}
    else:
      if not self._qa_jsonl:
        raise ValueError('qa_jsonl is required to build the qa config')
      for index, pair in enumerate(read_qa_jsonl(self._qa_jsonl)):
        yield f'{index:08d}', {
            'qa_id': pair.qa_id, 'doc_id': pair.doc_id, 'section': pair.section,
            'section_order': pair.section_order, 'question': pair.question,
            'answer': pair.answer, 'reasoning': pair.reasoning, 'source': pair.source}


def build_corpus_dataset(corpus_dir: str | pathlib.Path, qa_jsonl: str | pathlib.Path,
                         data_dir: str | pathlib.Path) -> dict[str, CorpusQa]:
  """Builds (or reuses, if already prepared) both configs under `data_dir`.

  Args:
    corpus_dir: document folder read with `ingest.load_corpus`.
    qa_jsonl: JSONL of QAPair records.
    data_dir: TFDS data directory.

  Returns:
    {'sections': builder, 'qa': builder}, both prepared.
  """
  builders = {}
  for name in ('sections', 'qa'):
    builder = CorpusQa(config=name, corpus_dir=str(corpus_dir), qa_jsonl=str(qa_jsonl),
                       data_dir=str(data_dir), file_format='array_record')
    builder.download_and_prepare()
    builders[name] = builder
  return builders


def load_prepared(data_dir: str | pathlib.Path, config: str) -> CorpusQa:
  """Opens an already prepared config ('sections' or 'qa') without the sources."""
  return CorpusQa(config=config, data_dir=str(data_dir), file_format='array_record')


def _decode(example: dict[str, Any], text_fields: tuple[str, ...]) -> dict[str, Any]:
  out = {}
  for key, value in example.items():
    if key in text_fields:
      out[key] = value.decode('utf-8') if isinstance(value, bytes) else str(value)
    else:
      out[key] = int(value)
  return out


def _read(builder: CorpusQa, config: str) -> list[dict[str, Any]]:
  if builder.builder_config.name != config:
    raise ValueError(f'expected a {config!r} builder, got {builder.builder_config.name!r}')
  source = builder.as_data_source(split='train')
  return [_decode(source[i], _TEXT_FIELDS[config]) for i in range(len(source))]


def read_sections(builder: CorpusQa) -> list[dict[str, Any]]:
  """All sections as python dicts (str/int values), in corpus order."""
  return _read(builder, 'sections')


def read_qa(builder: CorpusQa) -> list[dict[str, Any]]:
  """All Q&A pairs as python dicts (str/int values), in file order."""
  return _read(builder, 'qa')
