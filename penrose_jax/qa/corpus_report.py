"""Corpus statistics for segmentation and rule-based Q&A (`python -m penrose_jax.qa.corpus_report DIR`)."""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import statistics
from typing import Sequence

from penrose_jax.data import ingest
from penrose_jax.qa import generate_rules


@dataclasses.dataclass
class CorpusReport:
  """Per-corpus numbers: sections per document, words per section, rule-based pairs."""
  documents: int
  problems: list[str]
  sections_per_doc: dict[str, float]
  words_per_section: dict[str, float]
  rule_pairs: int
  rule_pairs_per_section: dict[str, float]
  rule_pairs_by_kind: dict[str, int]
  sections_without_pairs: int


def _summary(values: Sequence[float]) -> dict[str, float]:
  return {'min': min(values), 'median': statistics.median(values),
          'mean': round(statistics.mean(values), 2), 'max': max(values)}


def _kind(question: str) -> str:
  for kind, templates in generate_rules.TEMPLATES.items():
    if any(question.startswith(t.split('{')[0]) for t in templates if t.split('{')[0]):
      return kind
  return 'other'


def build_report(corpus_path: str, max_facts_per_kind: int = 4) -> CorpusReport:
  """Loads a corpus, generates rule-based Q&A, and summarises both.

  Args:
    corpus_path: file or folder for `ingest.load_corpus`.
    max_facts_per_kind: passed to `generate_rules.generate_section_qa`.

  Returns:
    The `CorpusReport`.
  """
  documents, problems = ingest.load_corpus(corpus_path)
  per_section, kinds = [], collections.Counter()
  for document in documents:
    for section in document.sections:
      pairs = generate_rules.generate_section_qa(section, document.title, max_facts_per_kind)
      per_section.append(len(pairs))
      kinds.update(_kind(p.question) for p in pairs)
  return CorpusReport(
      documents=len(documents), problems=problems,
      sections_per_doc=_summary([len(d.sections) for d in documents]),
      words_per_section=_summary([len(s.text.split()) for d in documents for s in d.sections]),
      rule_pairs=sum(per_section), rule_pairs_per_section=_summary(per_section),
      rule_pairs_by_kind=dict(kinds), sections_without_pairs=per_section.count(0))


def main(argv: Sequence[str] | None = None) -> None:
  """CLI: prints the report of a corpus folder as JSON."""
  parser = argparse.ArgumentParser(description=__doc__)
  parser.add_argument('corpus_path')
  parser.add_argument('--max_facts_per_kind', type=int, default=4)
  args = parser.parse_args(argv)
  print(json.dumps(dataclasses.asdict(build_report(args.corpus_path, args.max_facts_per_kind)),
                   indent=1, ensure_ascii=False))


if __name__ == '__main__':
  main()
