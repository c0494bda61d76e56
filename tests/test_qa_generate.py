"""Tests for rule-based generation, support filter, dedupe, curated loaders and prompts."""

import json

import pytest

from penrose_jax.data.ingest import Document, Section
from penrose_jax.qa import curated, filtering, generate_rules, prompts
from penrose_jax.qa.records import QAPair

SECTION = Section('sofc', 2, 'Electrolyte', (
    'Yttria-stabilised zirconia is a ceramic oxide-ion conductor used as the electrolyte. '
    'The YSZ layer was sintered at 1400 °C for 5 h and was 10 μm thick. '
    'The cell delivered a peak power density of 1,037 mW/cm2 at 500 °C with the YSZ layer. '
    'Oxide ions move through YSZ by hopping into oxygen vacancies of the lattice. '
    'It is a promising material.'))


def test_rule_generation_kinds_and_paraphrases():
  pairs = generate_rules.generate_section_qa(SECTION, 'SOFC paper', max_facts_per_kind=6)
  assert all(p.source == 'rule' and p.section_order == 2 and p.doc_id == 'sofc' for p in pairs)
  assert len(pairs) % 3 == 0
  by_answer = {}
  for p in pairs:
    by_answer.setdefault(p.answer, []).append(p.question)
  definition = 'Yttria-stabilised zirconia is a ceramic oxide-ion conductor used as the electrolyte.'
  assert by_answer[definition][0] == 'What is Yttria-stabilised zirconia?'
  assert len(set(by_answer[definition])) == 3
  assert {'1400 °C', '5 h', '10 μm', '1,037 mW/cm2', '500 °C'} <= set(by_answer)
  assert 'sintering temperature' in by_answer['1400 °C'][0]
  assert 'thickness' in by_answer['10 μm'][0]
  assert 'peak power density' in by_answer['1,037 mW/cm2'][0]
  cloze = [p for p in pairs if p.question.startswith('Fill in the blank')]
  assert cloze and all(generate_rules.BLANK in p.question for p in cloze)
  assert not any('promising' in a for a in by_answer)
  for p in pairs:
    assert p.reasoning.startswith('The "Electrolyte" section states that')
    assert filtering.answer_supported(p.answer, SECTION.text)
    assert p.answer not in p.question


def test_numeric_ranges_and_units():
  facts = generate_rules.extract_numeric_facts(
      ['Cells were tested between 650 and 850°C in air for a long time.',
       'The conductivity reached 0.1 S cm−1 while the ASR was 0.15 Ω cm2 in total.'])
  assert [f.answer for f in facts] == ['650 and 850°C', '0.1 S cm−1', '0.15 Ω cm2']
  assert [dict(f.fields)['quantity'] for f in facts] == [
      'temperature', 'conductivity', 'area-specific resistance']


def test_answer_supported_rule():
  text = 'The cell reached 1,037 mW/cm2 at 500 °C using a GDC electrolyte layers.'
  assert filtering.answer_supported('1037 mW/cm2', text)
  assert filtering.answer_supported('a GDC electrolyte layer', text)
  assert not filtering.answer_supported('1038 mW/cm2', text)       # number not in section
  assert not filtering.answer_supported('a YSZ anode support', text)  # < 60% tokens
  assert not filtering.answer_supported('the', text)                 # no content tokens
  assert filtering.answer_supported('500 °C', text.replace('500', '500.0'))


def test_dedupe_keeps_first_per_document():
  a = QAPair('d', 'S', 0, 'What is X?', 'x1', '', 'rule')
  b = QAPair('d', 'S', 1, 'what is  x', 'x2', '', 'model')
  c = QAPair('e', 'S', 0, 'What is X?', 'x1', '', 'rule')
  assert filtering.dedupe_qa([a, b, c]) == [a, c]
  kept, rejected = filtering.filter_supported([a, c], {('d', 0): 'x1 here'})
  assert kept == [a] and rejected == [c]


def test_qapair_json_roundtrip_and_validation():
  pair = QAPair('d', 'Intro', 3, 'Q?', 'A', 'R', 'curated')
  assert len(pair.qa_id) == 16
  assert QAPair.from_json(pair.to_json()) == pair
  assert QAPair.from_json(json.loads(pair.to_json())) == pair
  with pytest.raises(ValueError):
    QAPair('d', 'Intro', 3, 'Q?', 'A', 'R', 'web')


def _jsonl(tmp_path, rows):
  path = tmp_path / 'c.jsonl'
  path.write_text('\n'.join(r if isinstance(r, str) else json.dumps(r) for r in rows))
  return path


def test_curated_loading_and_errors(tmp_path):
  good = dict(doc_id='d', section='Intro', question='Q?', answer='A', reasoning='R')
  doc = Document('d', 'T', (Section('d', 0, 'Overview', 'x'), Section('d', 1, 'Intro', 'y')))
  pairs = curated.load_curated_qa(_jsonl(tmp_path, [good, '', good]), [doc])
  assert [p.section_order for p in pairs] == [1, 1] and pairs[0].source == 'curated'
  assert curated.load_curated_qa(_jsonl(tmp_path, [good]))[0].section_order == -1
  cases = [
      ([good, {k: v for k, v in good.items() if k != 'answer'}], r':2: missing field\(s\) answer'),
      (['{not json'], ':1: invalid JSON'),
      ([good, '', dict(good, question='  ')], ":3: field 'question' must be a non-empty"),
      (['[1, 2]'], ':1: expected a JSON object'),
  ]
  for rows, message in cases:
    with pytest.raises(curated.CuratedQAError, match=message):
      curated.load_curated_qa(_jsonl(tmp_path, rows))
  with pytest.raises(curated.CuratedQAError, match=":1: no section 'Nope'"):
    curated.load_curated_qa(_jsonl(tmp_path, [dict(good, section='Nope')]), [doc])


def test_heldout_choices_validation(tmp_path):
  good = dict(doc_id='d', section='S', question='Q?', answer='b', reasoning='R',
              choices=['a', 'b', 'c', 'd'])
  [q] = curated.load_heldout_questions(_jsonl(tmp_path, [good]))
  assert q.answer_index == 1
  for bad, message in [(dict(good, choices=['a', 'b', 'c']), 'list of 4'),
                       (dict(good, choices=['a', 'b', 'b', 'd']), 'distinct'),
                       (dict(good, answer='z'), 'not one of the choices')]:
    with pytest.raises(curated.CuratedQAError, match=':2: .*' + message):
      curated.load_heldout_questions(_jsonl(tmp_path, [good, bad]))


def test_prompt_and_parser():
  messages = prompts.build_qa_generation_prompt(SECTION, num_questions=3, doc_title='Paper')
  assert [m['role'] for m in messages] == ['system', 'user']
  assert 'Section: Electrolyte' in messages[1]['content'] and '1,037 mW/cm2' in (
      messages[1]['content'])
  reply = """Here are the pairs:

1. **Q:** What was the sintering temperature?
**A:** 1400 °C
**Reasoning:** The Electrolyte section states that the layer
was sintered at 1400 °C.

Question 2: How thick was the layer?
Answer: 10 μm
Explanation: It says 10 μm.

Q3: A question with no answer?

Q: Last one?
A: yes
"""
  assert prompts.parse_generated_qa(reply) == [
      ('What was the sintering temperature?', '1400 °C',
       'The Electrolyte section states that the layer was sintered at 1400 °C.'),
      ('How thick was the layer?', '10 μm', 'It says 10 μm.'),
      ('Last one?', 'yes', '')]
  assert prompts.parse_generated_qa('no structured content') == []
