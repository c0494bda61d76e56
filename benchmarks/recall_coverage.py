"""Which numbers and names of a corpus become recall facts (qa/fact_recall.py), and which exam
answers are among the facts.

Command (from the repo root):
  python benchmarks/recall_coverage.py --corpus=package:injection_corpus \
      --open_exam=package:injection_open_exam --out=results/injection_recall_names/coverage.json
  python benchmarks/recall_coverage.py --corpus=my_docs/ --show=40

A fact the rules never extract is never restated, so no amount of training makes the model say
it. This counts, over every sentence the recall material reads, the spans a user may ask about:
numbers (with the token after them) and proper names (two or more capitalised words); a span is
covered when a recall fact's answer contains it. With an open exam it also counts the exam
answers that are a fact's answer (NFKC, case-insensitive): the ceiling of the exam's recall.
Rules only; takes a few seconds.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import re
import unicodedata

from penrose_jax.data import ingest
from penrose_jax.data.paths import resolve_data_path
from penrose_jax.evaluation import exam_files
from penrose_jax.qa import fact_recall
from penrose_jax.qa.study_facts import study_sentences
from penrose_jax.reporting import report_json

# The spans counted are found by their own plain patterns, not by the rules being measured.
_NUMBER_RE = re.compile(r'(?<![\w.-])\d[\d,.]*(?:\s?[^\s,.;]+)?')
_NAME_RE = re.compile(r'(?<![\w-])[A-Z][a-z]+(?:[ -][A-Z][a-z]+)+(?![\w-])')


def _norm(text: str) -> str:
  return unicodedata.normalize('NFKC', text).lower()


def coverage(documents, open_answers=()) -> dict:
  """Spans covered by recall facts, and exam answers that are fact answers.

  Args:
    documents: ingest.Document list.
    open_answers: the open exam's gold answer lists.

  Returns:
    {'facts', 'numbers': [covered, total], 'names': [covered, total], 'missed': [(kind, span,
    sentence)], 'exam_answers_in_facts': [hits, total]}.
  """
  counts = {'numbers': [0, 0], 'names': [0, 0]}
  missed, answers = [], []
  for document in documents:
    entity = fact_recall.document_entity(document)
    for section in document.sections:
      facts = fact_recall.recall_facts(section, entity)
      answers += [_norm(f.span) for f in facts]
      for sentence in study_sentences(section.text):
        spans = [f.span for f in facts if f.sentence == sentence]
        for kind, regex in (('numbers', _NUMBER_RE), ('names', _NAME_RE)):
          for match in regex.finditer(sentence):
            core = match.group(0).split()[0] if kind == 'numbers' else match.group(0)
            counts[kind][1] += 1
            if any(core in span for span in spans):
              counts[kind][0] += 1
            else:
              missed.append((kind, match.group(0), sentence))
  hits = sum(any(_norm(g) == a or (_norm(g) in a and len(a) < len(_norm(g)) + 25)
                 for g in golds for a in answers) for golds in open_answers)
  return {'facts': len(answers), **counts, 'missed': missed,
          'exam_answers_in_facts': [hits, len(open_answers)]}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--corpus', required=True, help="a corpus folder or 'package:NAME'")
  parser.add_argument('--open_exam', default='', help="an open-exam JSONL or 'package:NAME'")
  parser.add_argument('--show', type=int, default=20, help='missed spans printed')
  parser.add_argument('--out', default='', help='write the counts (JSON) here too')
  args = parser.parse_args()
  documents, problems = ingest.load_corpus(resolve_data_path(args.corpus))
  if problems:
    raise SystemExit('\n'.join(f'{path}: {why}' for path, why in problems))
  golds = ([q.answers for q in exam_files.read_open_exam(resolve_data_path(args.open_exam))]
           if args.open_exam else [])
  result = coverage(documents, golds)
  for kind, span, sentence in result['missed'][:args.show]:
    print(f'missed {kind[:-1]}: {span!r} in "{sentence[:90]}"')
  summary = {k: v for k, v in result.items() if k != 'missed'}
  print(json.dumps(summary))
  if args.out:
    report_json.write_json_atomic(pathlib.Path(args.out), summary)


if __name__ == '__main__':
  main()
