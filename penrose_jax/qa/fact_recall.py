"""Recall material: every fact restated under its entity's name, so a small model can say it.

Why (issue 28; Physics of Language Models 3.1, arXiv 2309.14316): a fact seen in one phrasing is
recognised but rarely extracted (~10 %); with >= 5 restatements per fact, the entity's full name
in every sentence and rows shuffled globally, extraction reaches ~96 %. A fact stated one way is
not recalled the other way (the reversal curse, arXiv 2309.12288), so both directions are stated.

Per section, the facts of `study_facts.extract_facts` whose answer is short (a value with its
unit, a name, a term: at most `MAX_SPAN_WORDS` words) become:
  * `RECALL_TEXTS` >= 10 restatements, each naming the document's entity (`document_entity`:
    the title's head, e.g. 'Veltrane-7' of 'Veltrane-7: A Self-Healing Oxide Ceramic', else the
    document's most frequent name) and holding the value: entity -> value and value -> entity,
    value first and value last; most are short key-value sentences (the key is the content
    words of the fact's sentence, `fact_key`) to keep the tokens per exposure low;
  * short-answer Q&A whose answer is the value itself (and one reverse question whose answer is
    the entity);
  * one held-out wording per fact (`split='heldout'`) that no training row uses: the fact's
    natural wh-question from `study_material.fact_questions` when it has one, else a template
    reserved for the self-test. With one trained wording (`split='trained'`) it forms the
    self-test (`SelfTestQuestion`): recall on held-out wordings is what a user can read
    without writing an exam, and trained vs held-out separates under-fitting from facts not
    stored under the entity.
Texts carry a `group` (the fact id) so the trainer never packs two paraphrases of one fact into
one context window (a public Physics 3.1 replication: 97.5 % shuffled, 7 % when paraphrases
shared a window). The section text itself trains as before (qa/trainer.py). Rules only: works
on any document the ingest readers load (Markdown / LaTeX / JATS / plain text).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import re
from typing import Any, Iterable, Sequence

from penrose_jax.data import jsonl_files
from penrose_jax.data.ingest import Document, Section
from penrose_jax.qa import filtering
from penrose_jax.qa.records import QAPair
from penrose_jax.qa.study_facts import (BLANK, StudyFact, cap, clean_markup, extract_facts, norm,
                                        section_entities, study_sentences)
from penrose_jax.qa.study_material import StudyText, fact_questions

SOURCE = 'recall'
MAX_SPAN_WORDS = 8
MAX_ENTITY_WORDS = 6
CONTEXT_KEY_WORDS = 5  # key words of the sentence before, in two restatements
CONTEXT_WORDS = 9  # words kept on each side of the blank in a cloze wording
RECALL_TEXTS = 10  # restatements per fact, at least
SPLITS = ('trained', 'heldout')
_STOP = frozenset(
    'the a an of in on at to for by with and or is are was were be been has have had this that '
    'these those its their it as from which who than then into after before during while about '
    'up down out over under per each any all some more most only also not no'.split())
# The reserved held-out template (never a training wording).
HELDOUT_TEMPLATE = 'Regarding {entity}, which {what} does the text give for "{masked}"?'


@dataclasses.dataclass(frozen=True)
class SelfTestQuestion:
  """One self-test question of a fact (open question, scored by containment).

  Attributes:
    doc_id: the document.
    section: the section title.
    fact: the fact id ('doc_id/section_order/index'), the `group` of its texts.
    question: the wording.
    answer: the short answer (the value).
    split: 'heldout' (never trained) or 'trained' (one of the training wordings).
  """
  doc_id: str
  section: str
  fact: str
  question: str
  answer: str
  split: str

  def to_json(self) -> str:
    """Returns a one-line JSON object (readable as an open-exam line: question/answer/doc_id)."""
    return json.dumps(dataclasses.asdict(self), ensure_ascii=False)

  @classmethod
  def from_json(cls, data: str | dict[str, Any]) -> 'SelfTestQuestion':
    """Parses `to_json` output (a string or a decoded dict)."""
    data = json.loads(data) if isinstance(data, str) else dict(data)
    return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls)})


@dataclasses.dataclass
class RecallMaterial:
  """What `generate_section_recall` made for one section."""
  pairs: list[QAPair]
  texts: list[StudyText]
  selftest: list[SelfTestQuestion]
  facts: int = 0


def document_entity(document: Document) -> str:
  """The name a document is about: the title's head, else its most frequent name.

  Args:
    document: the document.

  Returns:
    'Veltrane-7' for 'Veltrane-7: A Self-Healing Oxide Ceramic'; for a long title without a
    short head, the entity (acronym, formula, capitalised name) mentioned most often; the
    title when the text names none.
  """
  title = ' '.join(document.title.split())
  head = re.split(r'\s*[:–—]\s+|\s+-\s+', title)[0].strip()
  head = re.sub(r'^(?:The|A|An)\s+', '', head)
  if head and len(head.split()) <= MAX_ENTITY_WORDS:
    return head
  text = clean_markup(' '.join(s.text for s in document.sections))
  counts = collections.Counter()
  for section in document.sections:
    for entity in section_entities(section.text):
      counts[entity] = len(re.findall(rf'(?<![\w-]){re.escape(entity)}(?![\w-])', text))
  in_title = [e for e, _ in counts.most_common() if e in title]
  return in_title[0] if in_title else counts.most_common(1)[0][0] if counts else title


def _short_answer(fact: StudyFact) -> bool:
  """A fact recall can restate: 1..MAX_SPAN_WORDS answer words, not a procedure."""
  return 1 <= len(fact.span.split()) <= MAX_SPAN_WORDS and fact.kind != 'procedure'


def recall_facts(section: Section, entity: str = '') -> list[StudyFact]:
  """The facts of a section with a short answer that occurs in the section, first seen first.

  `extract_facts` (shared with the study material) finds values with known units and the
  relations it has rules for; recall needs every value a user may ask about, so two more rules
  run here on every sentence: proper names in mid-sentence (`name_facts`: the institute, the
  company, the town, the person) and numbers with any other unit (`unit_value_facts`:
  '312 Wh/kg', '0.86 W/(m·K)', '480 m3').

  Args:
    section: the section.
    entity: the document's entity (its own name is no fact of it).

  Returns:
    Facts whose span has 1..MAX_SPAN_WORDS words (one per (answer, sentence)).
  """
  normalised = norm(clean_markup(section.text))
  # Short answers only, before the two rules look for free values: a long relation span ('a
  # specific energy of 312 Wh/kg at ...') is no recall fact, so the value inside it is free.
  found = [fact for fact in extract_facts(section.text) if _short_answer(fact)]
  for sentence in study_sentences(section.text):
    taken = [f.span for f in found if f.sentence == sentence]
    more = unit_value_facts(sentence, taken)
    found += more + name_facts(sentence, entity, taken + [f.span for f in more])
  out, seen = [], set()
  for fact in found:
    if not _short_answer(fact):
      continue
    # The answer as a whole word of its sentence ('7' of 'Veltrane-7' is no fact).
    if norm(fact.span) not in normalised or not re.search(
        rf'(?<![\w-]){re.escape(fact.span)}(?![\w-])', fact.sentence):
      continue
    key = (norm(fact.span), fact.sentence)
    if key not in seen:
      seen.add(key)
      out.append(fact)
  return out


# A multi-word proper name, 'of' / 'for' / 'and' inside ('Harrowgate Institute for Applied
# Ceramics'), or one capitalised word with a hyphen or inner capitals ('Parylene-Q', 'NiCoCrAlY').
_PROPER_NAME_RE = re.compile(
    r'(?<![\w-])(?:[A-Z][a-z]+(?:-[A-Z][a-z]+)?(?: (?:(?:of|for|and|de|van|von) )?'
    r'[A-Z][a-z]+(?:-[A-Z][a-z]+)?)+|[A-Z][a-z]*[A-Z][A-Za-z]*(?:-[A-Z0-9]+)?|'
    r'[A-Z][a-z]+-[A-Z][A-Za-z0-9]*)(?![\w-])')
_ORGANISATION_WORDS = frozenset(
    'institute university laboratory lab centre center works consortium company corporation '
    'group hospital college school academy foundation agency council power turbines displays '
    'aerospace cycles cable hydrogen energy metals'.split())
_PERSON_TITLES = re.compile(r'(?:Dr\.?|Professor|Prof\.|physicist|chemist|engineer|student|'
                            r'researcher|scientist|leader|director|under|led by),? $')


def name_facts(sentence: str, entity: str, taken: Sequence[str] = ()) -> list[StudyFact]:
  """Proper names after a sentence's first word, each a fact answered by the name.

  A name that starts the sentence is its topic ('Aubrel Hospital is following ...'), and the
  document's own entity is what every fact is about, so neither is a value.

  Args:
    sentence: a cleaned sentence.
    entity: the document's entity.
    taken: answers other rules already took in this sentence (not repeated).

  Returns:
    'entity' facts (the name blanked in `masked`; `what` = organisation / person / name).
  """
  out = []
  for match in _PROPER_NAME_RE.finditer(sentence):
    name = match.group(0)
    before = sentence[:match.start()]
    if not before.strip() or re.fullmatch(r'(?:The|A|An) ', before) or re.search(
        r'[.:;]\s*$', before):
      continue
    if entity and (norm(entity) in norm(name) or norm(name) in norm(entity)):
      continue
    if any(name in t or t in name for t in taken) or re.fullmatch(r'[A-Z]+s?', name):
      continue  # an acronym ('GDC') is an abbreviation fact's answer already
    what = ('organisation' if _ORGANISATION_WORDS & set(name.lower().split()) else
            'person' if _PERSON_TITLES.search(before) else 'name')
    masked = sentence[:match.start()] + BLANK + sentence[match.end():]
    out.append(StudyFact('entity', name, sentence, '', cap(sentence) + '.',
                         (('masked', masked), ('what', what))))
  return out


# A number and a unit that generate_rules does not know: symbols, a slash or a power inside
# ('Wh/kg', 'W/(m·K)', 'm3', 'cd/m2'), or a short capitalised symbol ('USD', 'Ah', 'T').
_UNIT_VALUE_RE = re.compile(
    r'(?<![\w.,-])(?P<value>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?) '
    r'(?P<unit>[A-Za-zµμΩ]+(?:[/·^][A-Za-z0-9()·/^²³−-]+|[²³0-9])+\)?|[A-Z][A-Za-z]{0,2}'
    r'(?![\w-])|volts?|amperes?|watts?)(?P<per> per \w+)?')
# 'a specific energy of (just) 312 Wh/kg', 'its water permeance is 14.6 ...': the noun phrase
# before 'of' or the verb names the quantity; any other context gives 'value'.
_QUANTITY_BEFORE_RE = re.compile(
    r'(?P<noun>(?:[a-z][a-z-]+ )?[a-z][a-z-]+) (?:of|is|are|was|were)'
    r'(?: (?:just|about|around|roughly|nearly|only|some|an estimated|approximately))? $')


def unit_value_facts(sentence: str, taken: Sequence[str] = ()) -> list[StudyFact]:
  """Numbers with units `extract_facts` does not know, each a numeric fact.

  Args:
    sentence: a cleaned sentence.
    taken: answers other rules already took in this sentence.

  Returns:
    'numeric' facts; the quantity is the noun phrase before the number ('specific energy'),
    else 'value'.
  """
  out = []
  for match in _UNIT_VALUE_RE.finditer(sentence):
    value = match.group(0)
    if any(match.group('value') in t for t in taken):
      continue
    before = _QUANTITY_BEFORE_RE.search(sentence[:match.start()])
    noun = [w for w in before.group('noun').split() if w not in _STOP] if before else []
    quantity = ' '.join(noun) or 'value'
    masked = sentence[:match.start()] + BLANK + sentence[match.end():]
    out.append(StudyFact('numeric', value, sentence, '', cap(sentence) + '.',
                         (('quantity', quantity), ('unit', match.group('unit')),
                          ('category', 'unit'), ('masked', masked), ('verb', ''),
                          ('middle', ''), ('after', ''))))
  return out


def _what(fact: StudyFact) -> str:
  """What the answer is ('temperature', 'number of compositions', 'name', ...)."""
  if fact.kind == 'numeric':
    return dict(fact.fields)['quantity']
  if fact.kind == 'abbreviation':
    return 'abbreviation'
  if fact.kind == 'definition':
    return 'description'
  return dict(fact.fields).get('what', 'name or term')


def fact_key(sentence: str, span: str, max_words: int = 8) -> str:
  """The content words of a fact's sentence without its answer: 'standard schedule holds die'.

  Args:
    sentence: the fact's sentence.
    span: the answer (removed).
    max_words: keep the first this many content words.

  Returns:
    The key phrase ('' when the sentence has no other content word).
  """
  rest = sentence.replace(span, ' ', 1)
  # Other values go with their unit word ('for 14 minutes', '62 MPa'): they are not the key.
  rest = re.sub(r'(?<![\w-])\d[\d,.]*(?:\s?(?:%|°\w*|[A-Za-zµμ][\w/·^−-]*))?', ' ', rest)
  words = [w.strip('.,;:()"\'') for w in rest.split()]
  words = [w for w in words if w and w.lower() not in _STOP and not re.search(r'\d', w)]
  return ' '.join(words[:max_words])


def masked_context(sentence: str, span: str, words: int = CONTEXT_WORDS) -> str:
  """The sentence around its answer, the answer blanked: at most `words` words on each side.

  Args:
    sentence: the fact's sentence.
    span: the answer.
    words: context words kept before and after the blank.

  Returns:
    '... holds the die at ___ for 14 minutes under ...' (short rows, the fact's own context).
  """
  start = sentence.find(span)
  before, after = sentence[:start].split(), sentence[start + len(span):].split()
  left = ('... ' if len(before) > words else '') + ' '.join(before[-words:])
  right = ' '.join(after[:words]) + (' ...' if len(after) > words else '')
  return ' '.join(f'{left} {BLANK} {right}'.split())


def restate(fact: StudyFact, entity: str, section: str, context: str = '') -> list[str]:
  """At least RECALL_TEXTS sentences that state the fact with the entity's name in each.

  Args:
    fact: the fact (span = the value).
    entity: the document's entity (`document_entity`).
    section: the section title.
    context: key words of the sentence before ('densification done spark plasma sintering'),
      which often names what the fact's sentence continues ('The standard schedule ...').

  Returns:
    Distinct sentences: entity -> value (value last) and value -> entity (value first).
  """
  value, sentence, what = fact.span, fact.sentence, _what(fact)
  key = fact_key(sentence, value) or section.lower()
  masked = masked_context(sentence, value)
  in_sentence = sentence if entity.lower() in sentence.lower() else f'{entity}: {sentence}'
  after = f' ({context})' if context else ''
  texts = [
      f'{in_sentence}.',
      f'{entity}, {key}{after}: {value}.',
      f'For {entity}, the {what} in "{masked}" is {value}.',
      f'In the {section} part of the {entity} text, the {what} for {key} is {value}.',
      f'{entity} ({section.lower()}), {what} of {key}: {value}.',
      f'Asked about {key} in {entity}, the answer is {value}.',
      f'{cap(value)} is the {what} that goes with {key} for {entity}.',
      f'{cap(value)}: {entity}, {key}.',
      f'{cap(value)} belongs to {entity} ({section.lower()}): {key}{after}.',
      f'The value {value} is what {entity} has for {key}.',
      f'{cap(value)} - that is the {what} of {entity} where the text says "{masked}".',
  ]
  return list(dict.fromkeys(' '.join(t.split()) for t in texts))


def fact_wordings(fact: StudyFact, entity: str, section: str, doc: str
                  ) -> tuple[list[tuple[str, str]], str]:
  """Training Q&A (question, short answer) of a fact and its held-out wording.

  Args:
    fact: the fact.
    entity: the document's entity.
    section: the section title.
    doc: the document title.

  Returns:
    (training pairs: value answers first, then one reverse pair answered by the entity,
    held-out question answered by the value).
  """
  value, what = fact.span, _what(fact)
  masked = masked_context(fact.sentence, value)
  key = fact_key(fact.sentence, value) or section.lower()
  # The answer must not be in the question ('What does the section say about X?' -> X).
  natural = [q for q, a in fact_questions(fact, section, doc) if a == value and
             not q.startswith(('Fill in', 'Complete')) and norm(value) not in norm(q)]
  name = lambda q: q if entity.lower() in q.lower() else f'About {entity}: {q}'
  heldout = (name(natural[0]) if natural else
             HELDOUT_TEMPLATE.format(entity=entity, what=what, masked=masked))
  # Two value answers and one reverse question per fact: Q&A rows cost ~3x a restatement's
  # tokens, and Q&A teaches the answer form, the restatements store the fact.
  pairs = [(f'For {entity}, what {what} fills the blank: "{masked}"?', value),
           (name(natural[1]) if len(natural) > 1 else
            f'What is the {what} for {key} in {entity}?', value)]
  if entity.lower() not in value.lower():
    pairs.append((f'Whose {what} is {value} where the text says "{masked}"?', entity))
  pairs = [(q, a) for q, a in dict.fromkeys(pairs) if q != heldout]
  return pairs, heldout


def generate_section_recall(section: Section, entity: str, doc_title: str = '') -> RecallMaterial:
  """Recall material of one section (module docstring).

  Args:
    section: the section.
    entity: the document's entity (`document_entity`).
    doc_title: the document title (some wordings cite it).

  Returns:
    RecallMaterial: training pairs (source 'recall'), texts (kind 'recall', group = fact id)
    and the self-test questions (one held-out and one trained wording per fact).
  """
  doc = doc_title or section.doc_id
  allowed = filtering.numbers_in(f'{clean_markup(section.text)} {section.title} {doc} {entity}')
  facts = recall_facts(section, entity)
  sentences = study_sentences(section.text)
  material = RecallMaterial([], [], [], facts=len(facts))
  for index, fact in enumerate(facts):
    group = f'{section.doc_id}/{section.order}/{index}'
    at = sentences.index(fact.sentence) if fact.sentence in sentences else 0
    context = ' '.join(fact_key(sentences[at - 1], '').split()[:CONTEXT_KEY_WORDS]) if at else ''
    for text in restate(fact, entity, section.title, context):
      if filtering.numbers_in(text) <= allowed:  # never a number the section lacks
        material.texts.append(StudyText(section.doc_id, section.title, section.order, SOURCE,
                                        text, source=SOURCE, group=group))
    pairs, heldout = fact_wordings(fact, entity, section.title, doc)
    for question, answer in pairs:
      material.pairs.append(QAPair(section.doc_id, section.title, section.order, question,
                                   answer, '', SOURCE))
    material.selftest += [
        SelfTestQuestion(section.doc_id, section.title, group, heldout, fact.span, 'heldout'),
        SelfTestQuestion(section.doc_id, section.title, group, pairs[0][0], fact.span, 'trained')]
  return material


def generate_document_recall(document: Document) -> RecallMaterial:
  """`generate_section_recall` over a document's sections (section order)."""
  entity = document_entity(document)
  total = RecallMaterial([], [], [])
  for section in document.sections:
    part = generate_section_recall(section, entity, document.title)
    total.pairs += part.pairs
    total.texts += part.texts
    total.selftest += part.selftest
    total.facts += part.facts
  return total


def selftest_path(qa_path: Any) -> Any:
  """The self-test JSONL beside a qa_pairs JSONL ('qa_pairs.jsonl' -> 'qa_pairs.selftest.jsonl')."""
  return qa_path.with_name(qa_path.stem + '.selftest.jsonl')


def read_selftest(paths: Iterable[Any]) -> list[SelfTestQuestion]:
  """Reads SelfTestQuestion records from JSONL files (missing files are skipped)."""
  return [SelfTestQuestion.from_json(d) for p in paths if p.exists()
          for d in jsonl_files.read_jsonl(p)]


def pick_selftest(questions: Sequence[SelfTestQuestion], split: str, per_doc: int = 0
                  ) -> list[SelfTestQuestion]:
  """The questions of one split, at most `per_doc` per document spread over its facts.

  Args:
    questions: self-test questions.
    split: 'heldout' or 'trained'.
    per_doc: cap per document (0 = all); evenly spaced over the document's facts so every
      section is represented.

  Returns:
    The questions, in input order.
  """
  if split not in SPLITS:
    raise ValueError(f'self-test split must be one of {SPLITS}, got {split!r}')
  by_doc: dict[str, list[SelfTestQuestion]] = {}
  for q in questions:
    if q.split == split:
      by_doc.setdefault(q.doc_id, []).append(q)
  out = []
  for doc_questions in by_doc.values():
    if per_doc and len(doc_questions) > per_doc:
      step = len(doc_questions) / per_doc
      doc_questions = [doc_questions[int(i * step)] for i in range(per_doc)]
    out += doc_questions
  return out


def recalled_summary(by_doc: dict[str, dict[str, Any]]) -> dict[str, str]:
  """'N of M facts recalled' per document from `closed_book.score_open_exam`'s by_doc rows."""
  return {doc: f"{round(row['contains'] * row['questions'])} of {row['questions']} facts recalled"
          for doc, row in sorted(by_doc.items())}
