"""The `sofc_tasks` Q&A source: SOFC-Exp extraction tasks as supervised training pairs.

Each annotated sentence of a **train-split** article (metadata.tsv) becomes one pair per task:
the question is the zero-shot user message of `evaluation.sofc_tasks.build_prompt` (the exact
prompt the extraction evaluation sends), the answer is `sofc_tasks.gold_answer` ('yes' / 'no',
the labelled entity lines, the slot lines), the reasoning is empty. Dev articles never yield
pairs, whatever documents the corpus holds, so a model tuned on this source can be measured on
dev without leakage. Pairs are attached to the section of the document whose text contains the
sentence (whitespace-normalised; else its first or last 60 characters), else to the section of
the previous sentence, so section-wise training meets them in reading order.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional, Sequence

from penrose_jax.data import paths
from penrose_jax.data.ingest import Document
from penrose_jax.evaluation import sofc_annotations, sofc_tasks
from penrose_jax.evaluation.extraction import select_sentences
from penrose_jax.qa.records import QAPair

SOURCE = "sofc_tasks"


@dataclasses.dataclass
class SofcTaskSettings:
  """What the source builds (qa_tune config section `sofc_tasks`).

  Attributes:
    data_root: SOFC-Exp root (metadata.tsv, texts/, annotations/); a config path.
    tasks: comma list of sofc_tasks.TASKS.
    max_per_document: sentences per task and article, seeded draw (0 = all).
    seed: seed of that draw.
  """

  data_root: str = "../shared/data/sofc_exp"
  tasks: str = "detection,entities,slots"
  max_per_document: int = 0
  seed: int = 0


def settings_from_config(config: Any) -> SofcTaskSettings:
  """SofcTaskSettings from a config section (None = defaults).

  Args:
    config: a ConfigDict / mapping with SofcTaskSettings field names, or None.

  Returns:
    SofcTaskSettings.
  """
  if config is None:
    return SofcTaskSettings()
  names = {f.name for f in dataclasses.fields(SofcTaskSettings)}
  return SofcTaskSettings(**{k: config[k] for k in names if k in config})


def _norm(text: str) -> str:
  return re.sub(r"\s+", " ", text).strip()


def _section_of(sentence: str, sections: Sequence[tuple[int, str, str]]) -> Optional[tuple]:
  """The first (order, title, normalised text) section containing the sentence."""
  needle = _norm(sentence)
  for probe in (needle, needle[:60], needle[-60:]):
    if len(probe) < 20 and probe != needle:
      continue
    for section in sections:
      if probe and probe in section[2]:
        return section
  return None


def document_pairs(document: Document, article: sofc_annotations.Article,
                   settings: SofcTaskSettings) -> list[QAPair]:
  """The training pairs of one train-split article.

  Args:
    document: the ingested article (for section titles and orders).
    article: its annotations.
    settings: SofcTaskSettings.

  Returns:
    QAPairs with source 'sofc_tasks', in sentence order within each task.

  Raises:
    ValueError: the article is not in the train split (the no-leak guard).
  """
  if article.split != "train":
    raise ValueError(f"sofc_tasks: {article.doc_id} is a {article.split!r} article; only "
                     "train articles may become training pairs")
  sections = [(s.order, s.title, _norm(s.text)) for s in document.sections]
  if not sections:
    return []
  where: dict[int, tuple] = {}
  current = sections[0]
  for sentence in article.sentences:
    current = _section_of(sentence.text, sections) or current
    where[sentence.sentence_id] = current
  pairs = []
  for task in [t.strip() for t in settings.tasks.split(",") if t.strip()]:
    chosen = select_sentences(sofc_tasks.task_sentences(article.sentences, task),
                              settings.max_per_document, settings.seed)
    for sentence in chosen:
      order, title, _ = where[sentence.sentence_id]
      pairs.append(QAPair(document.doc_id, title, order,
                          sofc_tasks.build_prompt(sentence.text, task),
                          sofc_tasks.gold_answer(sentence, task), "", SOURCE))
  return pairs


def sofc_task_pairs(documents: Sequence[Document], settings: SofcTaskSettings
                    ) -> tuple[dict[str, list[QAPair]], list[str]]:
  """Training pairs of the corpus documents that are train-split SOFC-Exp articles.

  Args:
    documents: the corpus.
    settings: SofcTaskSettings.

  Returns:
    ({doc_id: pairs}, notes): notes say when the data root is missing and which documents got
    no pairs (dev articles, documents outside SOFC-Exp).
  """
  root = paths.resolve_data_path(settings.data_root)
  if not (root / "metadata.tsv").is_file():
    return {}, [f"sofc_tasks: {root / 'metadata.tsv'} not found"]
  splits = sofc_annotations.read_splits(root)
  out: dict[str, list[QAPair]] = {}
  held_out = [d.doc_id for d in documents if splits.get(d.doc_id) == "dev"]
  unknown = [d.doc_id for d in documents if d.doc_id not in splits]
  for document in documents:
    if splits.get(document.doc_id) == "train":
      article = sofc_annotations.read_article(root, document.doc_id, "train")
      out[document.doc_id] = document_pairs(document, article, settings)
  notes = []
  if held_out:
    notes.append(f"sofc_tasks: no pairs from dev articles {held_out}")
  if unknown:
    notes.append(f"sofc_tasks: {len(unknown)} documents are not SOFC-Exp articles")
  return out, notes
