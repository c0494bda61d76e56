"""Study material: every fact of a section as several questions, restatements and entity notes.

Facts come from `study_facts.extract_facts` (rules for any Markdown / LaTeX / plain section:
values with units, definitions, abbreviations, relations, procedure steps, named entities).
Per fact:
  * questions (`fact_questions`): up to `variants` wordings in different word orders:
    wh-questions ('At what temperature was X sintered?'), 'What is the Q of X?', cloze, echo
    order ('X provides what?') and the reversed direction (value/object -> subject) where the
    fact has a subject. Even-numbered kept variants answer with the short span, odd-numbered
    ones with a sentence; the reasoning always gives the other form and cites the section;
  * restatements (`restatements`): front/back clause reordering, passive -> active with the
    agent, 'X has a Q of V', 'V is the Q of X', 'ABBR stands for ...', cleft 'It is X that ...';
and per section one note per entity (`entity_notes`) linking what the section says about it
(long form or definition, values, procedures, the entities it is mentioned with).
Filters (counted in `StudyMaterial`): support (the short span occurs, whole words, in the
normalised markup-free section text; a sentence answer must also pass
`filtering.answer_supported`; a text may hold no number the section lacks) and duplicates (a
normalised question seen before in the section, a normalised text seen before).
Pairs are `QAPair`s with source 'study'; restatements and notes are `StudyText` records in their
own JSONL (`texts_path`), trained as text rows of their section (qa/trainer.py).
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any, Iterable, Sequence

from penrose_jax.data import jsonl_files
from penrose_jax.data.ingest import Document, Section
from penrose_jax.qa import filtering
from penrose_jax.qa.records import QAPair
from penrose_jax.qa.study_facts import (AUX, BLANK, INTRO_RE, IRREGULAR_PAST, RELATION_VERBS, WH,
                                        StudyFact, cap, clean_markup, extract_facts, low,
                                        lower_first, norm, section_entities)

SOURCE = 'study'


@dataclasses.dataclass(frozen=True)
class StudyText:
  """A plain-text training record (restatement or entity note) tied to a section.

  `group` names the fact a text restates ('' = none): the trainer never packs two texts of one
  group into one row (qa/fact_recall.py).
  """
  doc_id: str
  section: str
  section_order: int
  kind: str
  text: str
  source: str = SOURCE
  group: str = ''

  def to_json(self) -> str:
    """Returns a one-line JSON object with all fields."""
    return json.dumps(dataclasses.asdict(self), ensure_ascii=False)

  @classmethod
  def from_json(cls, data: str | dict[str, Any]) -> 'StudyText':
    """Parses `to_json` output (a string or an already-decoded dict)."""
    data = json.loads(data) if isinstance(data, str) else dict(data)
    return cls(**{f.name: data[f.name] for f in dataclasses.fields(cls) if f.name in data})


@dataclasses.dataclass
class StudyMaterial:
  """What `generate_section_study` made for one section (or, summed, for a corpus)."""
  pairs: list[QAPair]
  texts: list[StudyText]
  facts: int = 0
  rejected_duplicate: int = 0
  rejected_unsupported: int = 0


# ------------------------------------------------------------------------------ questions

_TRAILING_PREP = re.compile(r'\s*\b(?:at|of|to|in|for|by|about|around|between|from|with|near|'
                            r'reaching|approximately|roughly|only|ca\.|~|≈)\s*$')


def _a(word: str) -> str:
  return 'an' if word[:1].lower() in 'aeiou' else 'a'


def _plural(phrase: str) -> bool:
  last = phrase.split()[-1] if phrase.split() else ''
  return ' and ' in phrase or (last.endswith('s') and not last.endswith(('ss', 'is', 'us')))


def _numeric_questions(fact: StudyFact, f: dict[str, str], section: str, doc: str
                       ) -> list[tuple[str, str]]:
  value, subject, quantity = fact.span, fact.subject, f['quantity']
  after = f' {f["after"].strip()}' if f['after'].strip() else ''
  if not subject:
    return [(f'What {quantity} completes this statement from the "{section}" section: '
             f'"{f["masked"]}"?', value),
            (f'Fill in the blank: "{f["masked"]}"', value),
            (f'In "{doc}", which value of the {quantity} fills the blank: "{f["masked"]}"?', value)]
  lows, verb, middle = low(subject), f['verb'], f['middle']
  bare = _TRAILING_PREP.sub('', middle).strip()
  # 'filled with ozone at a pressure (of)': the wh-phrase names the quantity already.
  bare = re.sub(rf'\s*\b(?:at|with|of|to|under|in)?\s*\b(?:a|an|the)\s+(?:[\w-]+\s+){{0,3}}'
                rf'{re.escape(quantity.split()[-1])}$', '', bare).strip()
  # 'the open-circuit voltage of a cell is 1.1 V': the subject already names the quantity.
  named = quantity.lower() in subject.lower()
  out = []
  if verb in ('has', 'have', 'had'):
    out.append((f'What {quantity} {dict(has="does", have="do", had="did")[verb]} {lows} have?',
                value))
  elif verb in ('is', 'are', 'was', 'were') and not bare:  # '... is (about) 1.1 V'
    out.append((f'What {verb} {lows}{after}?', value))
  elif verb and f['category'] in WH and re.fullmatch(AUX, verb):
    first, _, rest = verb.partition(' ')
    out.append((f'{WH[f["category"]]} {first} {lows} {(rest + " ") if rest else ""}{bare}{after}?'
                .replace('  ', ' ').replace(' ?', '?'), value))
  generic = quantity == f['category']  # no context keyword: 'temperature' of 'at 1000 °C'
  if f['category'] not in ('year', 'percentage', 'count') and not named and not generic:
    out.append((f'What is the {quantity} of {lows}?', value))
  out.append((f'Fill in the blank: "{f["masked"]}"', value))
  if verb:
    out.append((f'What {verb} {middle} {value}{after}?'.replace('  ', ' '), subject))
    what = 'what value' if named or middle.endswith(' of') or not middle else f'what {quantity}'
    out.append((f'{cap(subject)} {verb} {middle} {what}{after}?'.replace('  ', ' '), value))
  unit = f' (in {f["unit"]})' if f['unit'] else ''
  if named:
    out.append((f'According to "{doc}", how large is {lows}{unit}?', value))
  else:
    out.append((f'Which {quantity}{unit} does the "{section}" section report for {lows}?', value))
    out.append((f'According to "{doc}", what value does the {quantity} of {lows} take?', value))
  return out


def _lemma(verb: str) -> str:
  if verb.endswith(('shes', 'ches', 'xes', 'sses')):
    return verb[:-2]
  return verb[:-1] if verb.endswith('s') else ''


def fact_questions(fact: StudyFact, section: str, doc: str) -> list[tuple[str, str]]:
  """Candidate (question, short answer) pairs of a fact, most distinct wordings first.

  Args:
    fact: the fact.
    section: the section title (some wordings cite it).
    doc: the document title.

  Returns:
    The candidates; the short answer is a span of the sentence.
  """
  f = dict(fact.fields)
  s, span = fact.subject, fact.span
  if fact.kind == 'numeric':
    return _numeric_questions(fact, f, section, doc)
  if fact.kind == 'definition':
    term = f['term']
    match = re.match(r'^(?:a|an|the) (?P<head>[\w -]+?) (?:that|which|who) (?P<rest>.+)$', span)
    head_ok = match and match.group('head').split()[-1] not in ('in', 'of', 'on', 'by', 'at')
    reverse = (f'Which {match.group("head")} {match.group("rest")}?' if head_ok
               else f'What is described as {span}?')
    masked = fact.statement.replace(term, BLANK, 1)
    return [(f'What is {term}?', span), (f'How does the "{section}" section define {term}?', span),
            (reverse, term), (f'Fill in the blank: "{masked}"', term),
            (f'According to "{doc}", what kind of thing is {term}?', span)]
  if fact.kind == 'called':
    term = f['term']
    return [(f'What is {s} called?', term), (f'What does the term {term} refer to?', s),
            (f'Which term does the "{section}" section use for {s}?', term),
            (f'Fill in the blank: "{cap(s)} is called {BLANK}."', term)]
  if fact.kind == 'abbreviation':
    return [(f'What does {span} stand for?', s), (f'What is the abbreviation for {s}?', span),
            (f'In the "{section}" section, {span} is short for what?', s),
            (f'Which abbreviation does "{doc}" use for {s}?', span),
            (f'Fill in the blank: "{span} stands for {BLANK}."', s)]
  if fact.kind == 'relation':
    verb = f['verb']
    lemma = _lemma(verb)
    participle = RELATION_VERBS[verb]
    be = 'are' if _plural(span) else 'is'
    return [(f'What {verb} {span}?', s), (f'{cap(s)} {verb} what?', span),
            (f'According to the "{section}" section, what does {low(s)} {lemma}?' if lemma
             else f'What is it that {low(s)} {verb}, according to the "{section}" section?', span),
            (f'Fill in the blank: "{cap(s)} {verb} {BLANK}."', span),
            (f'By what {be} {span} {participle}, according to "{doc}"?', s)]
  if fact.kind == 'procedure':
    aux, part, rest, agent = f['aux'], f['part'], f['rest'], f['agent']
    first, _, more = aux.partition(' ')
    more = f'{more} ' if more else ''
    singular = {'are': 'is', 'were': 'was', 'have been': 'has been'}.get(aux, aux)
    out = [(f'What {singular} done to {low(s)}?', span),
           (f'What {aux} {part} {rest}?', s),
           (f'How {first} {low(s)} {more}{part}?', rest)]
    if agent:
      out.append((f'By whom or by what {first} {low(s)} {more}{part}?', agent))
    out += [(f'Fill in the blank: "{cap(s)} {aux} {part} {BLANK}."', rest),
            (f'{cap(s)} {aux} what, according to the "{section}" section?', span)]
    return out
  if fact.kind == 'copula':
    verb = f['verb']
    head = re.sub(r'^(?:the|an?) ', '', s, flags=re.I)
    return [(f'What {verb} {low(s)}?', span), (f'Which {head} {verb} {span}?', s),
            (f'{cap(s)} {verb} what, according to the "{section}" section?', span),
            (f'Fill in the blank: "{cap(s)} {verb} {BLANK}."', span)]
  masked = f['masked']  # entity cloze
  return [(f'Fill in the blank: "{masked}"', span),
          (f'What does the "{section}" section say about {span}?', span),
          (f'Which name or term is missing from this statement of the "{section}" section: '
           f'"{masked}"?', span),
          (f'Complete the statement from "{doc}": "{masked}"', span)]


# --------------------------------------------------------------------------- restatements

def restatements(fact: StudyFact, section: str, doc: str) -> list[str]:
  """New sentences that state the fact (reordered, passive/active, 'X has a Q of V', ...).

  Args:
    fact: the fact.
    section: the section title.
    doc: the document title.

  Returns:
    Sentences, none equal to the source sentence.
  """
  f = dict(fact.fields)
  s, span = fact.subject, fact.span
  out = []
  intro = INTRO_RE.match(fact.sentence)
  if intro:
    out.append(f'{cap(intro.group("main"))} {lower_first(intro.group("intro"))}.')
  if fact.kind == 'numeric' and s:
    quantity, lows = f['quantity'], low(s)
    if f['category'] == 'year':
      out.append(f'It was in {span} that {lows} {f["verb"]} '
                 f'{_TRAILING_PREP.sub("", f["middle"])}{" " + f["after"].strip()}.'
                 .replace('  ', ' ').replace(' .', '.'))
    elif quantity.lower() in s.lower():
      out += [f'{cap(s)} is {span}.', f'{cap(span)} is {lows}.']
    elif quantity == f['category']:  # a bare unit category: only say what the value is for
      out.append(f'For {lows}, the "{section}" section gives the {quantity} {span}.')
    else:
      out += [f'{cap(s)} {"have" if _plural(s) else "has"} {_a(quantity)} {quantity} of {span}.',
              f'The {quantity} of {lows} is {span}.',
              f'{cap(span)} is the {quantity} reported for {lows}.']
  elif fact.kind == 'numeric':
    out.append(f'{cap(_a(f["quantity"]))} {f["quantity"]} of {span} is given in the "{section}" '
               f'section: {fact.sentence}.')
  elif fact.kind == 'definition':
    out += [f'The term {f["term"]} means {span}.', f'{cap(span)} is called {f["term"]}.',
            f'In "{doc}", {f["term"]} is defined as {span}.']
  elif fact.kind == 'called':
    out += [f'{cap(span)} is the name for {s}.', f'The term {span} refers to {s}.']
  elif fact.kind == 'copula':
    out += [f'{cap(span)} {f["verb"]} {low(s)}.', f'In "{doc}", {low(s)} {f["verb"]} {span}.']
  elif fact.kind == 'abbreviation':
    out += [fact.statement, f'{cap(s)} is abbreviated as {span}.',
            f'The abbreviation {span} means {s}.']
  elif fact.kind == 'relation':
    verb = f['verb']
    past = not verb.endswith('s')
    be = ('were' if past else 'are') if _plural(span) else ('was' if past else 'is')
    out += [f'It is {low(s)} that {verb} {span}.',
            f'{cap(span)} {be} {RELATION_VERBS[verb]} by {low(s)}.']
  elif fact.kind == 'procedure':
    aux, part, rest, agent = f['aux'], f['part'], f['rest'], f['agent']
    if agent and aux in ('was', 'were'):
      past = IRREGULAR_PAST.get(part, part)
      others = ' '.join(rest.replace(f'by {agent}', ' ').split())
      out.append(f'{cap(agent)} {past} {low(s)}{" " + others if others else ""}.')
    if re.match(r'^(?:at|in|on|by|with|using|via|under|for|from|through|into)\b', rest) and \
        len(rest.split()) <= 12 and ' and ' not in rest:
      out.append(f'{cap(rest)}, {low(s)} {aux} {part}.')
  key = norm(fact.sentence)
  return [text for text in dict.fromkeys(out) if norm(text) != key]


def entity_notes(entities: Sequence[str], facts: Sequence[StudyFact], section: str, doc: str,
                 max_notes: int = 8) -> list[str]:
  """One note per entity linking what the section says about it.

  Args:
    entities: the section's entities (`section_entities`).
    facts: the section's facts.
    section: the section title.
    doc: the document title.
    max_notes: at most this many notes.

  Returns:
    Notes with at least two lines of content each.
  """
  notes = []
  for entity in entities:
    pattern = re.compile(rf'(?<![\w-]){re.escape(entity)}(?![\w-])')
    lines = []
    for fact in facts:
      f = dict(fact.fields)
      if not pattern.search(fact.sentence):
        continue
      if fact.kind == 'abbreviation' and entity in (fact.span, fact.subject):
        lines.append(fact.statement)
      elif fact.kind in ('definition', 'called', 'relation', 'procedure', 'copula'):
        lines.append(fact.statement)
      elif fact.kind == 'numeric':
        about = f' for {low(fact.subject)}' if fact.subject and fact.subject != entity else ''
        lines.append(f'With {entity}, the section gives {_a(f["quantity"])} {f["quantity"]} of '
                     f'{fact.span}{about}.')
    together = [other for other in entities if other != entity and any(
        pattern.search(fact.sentence) and other in fact.sentence for fact in facts)]
    if together:
      lines.append(f'{entity} is mentioned together with {", ".join(together[:5])}.')
    lines = list(dict.fromkeys(lines))
    if len(lines) >= 2:
      notes.append(f'Notes on {entity} (section "{section}" of "{doc}"):\n- ' + '\n- '.join(lines))
    if len(notes) >= max_notes:
      break
  return notes


# ---------------------------------------------------------------------------- generation

def _reasoning(fact: StudyFact, section: str, sentence_form: bool, short: str) -> str:
  sentence = fact.sentence
  if sentence[:1].isupper() and sentence[1:2].islower():
    sentence = sentence[0].lower() + sentence[1:]
  cited = f'The "{section}" section states that {sentence}.'
  return f'{cited} The short answer is {short}.' if sentence_form else \
      f'{cited} In a sentence: {fact.statement}'


def generate_section_study(section: Section, doc_title: str = '', variants: int = 4,
                           max_facts: int = 0) -> StudyMaterial:
  """Study material of one section: filtered Q&A pairs and text records.

  Args:
    section: the section.
    doc_title: the document title (some wordings cite it).
    variants: questions kept per fact (different wordings; odd ones answered in a sentence).
    max_facts: at most this many facts (0 = all).

  Returns:
    StudyMaterial with the kept pairs and texts and the filter counts.
  """
  doc = doc_title or section.doc_id
  clean = clean_markup(section.text)
  normalised = norm(clean)
  # Texts cite the section and document titles, whose numbers ('part 3') are fine too.
  section_numbers = filtering.numbers_in(f'{clean} {section.title} {doc}')
  facts = extract_facts(section.text, max_facts)
  material = StudyMaterial([], [], facts=len(facts))
  seen: set[str] = set()
  for fact in facts:
    kept = 0
    for question, short in fact_questions(fact, section.title, doc):
      if kept >= variants:
        break
      sentence_form = kept % 2 == 1
      answer = fact.statement if sentence_form else short
      supported = norm(short).strip() != '' and norm(short) in normalised and (
          not sentence_form or filtering.answer_supported(answer, clean))
      if not supported:
        material.rejected_unsupported += 1
        continue
      key = filtering.question_key(question)
      if key in seen:
        material.rejected_duplicate += 1
        continue
      seen.add(key)
      kept += 1
      material.pairs.append(QAPair(section.doc_id, section.title, section.order, question,
                                   answer, _reasoning(fact, section.title, sentence_form, short),
                                   SOURCE))
  texts = [('restatement', t) for fact in facts for t in restatements(fact, section.title, doc)]
  texts += [('note', t) for t in entity_notes(section_entities(section.text), facts,
                                              section.title, doc)]
  seen_texts: set[str] = set()
  for kind, text in texts:
    if not filtering.numbers_in(text) <= section_numbers:  # never a number the text lacks
      material.rejected_unsupported += 1
      continue
    key = norm(text)
    if key in seen_texts:
      material.rejected_duplicate += 1
      continue
    seen_texts.add(key)
    material.texts.append(StudyText(section.doc_id, section.title, section.order, kind, text))
  return material


def generate_document_study(document: Document, variants: int = 4, max_facts: int = 0
                            ) -> StudyMaterial:
  """`generate_section_study` over a document's sections, summed (section order)."""
  total = StudyMaterial([], [])
  for section in document.sections:
    part = generate_section_study(section, document.title, variants, max_facts)
    total.pairs += part.pairs
    total.texts += part.texts
    total.facts += part.facts
    total.rejected_duplicate += part.rejected_duplicate
    total.rejected_unsupported += part.rejected_unsupported
  return total


def study_statistics(documents: Sequence[Document], variants: int = 4, max_facts: int = 0
                     ) -> dict[str, Any]:
  """Counts for the report (regenerated: the rules are deterministic and fast).

  Args:
    documents: the corpus.
    variants: as in `generate_section_study`.
    max_facts: as in `generate_section_study`.

  Returns:
    {'sections', 'facts', 'pairs', 'texts', 'pairs_per_section_mean', 'pairs_per_fact_mean',
    'texts_per_section_mean', 'rejected_duplicate', 'rejected_unsupported'} (before the
    cross-source de-duplication of qa_pairs.jsonl).
  """
  materials = [generate_document_study(d, variants, max_facts) for d in documents]
  sections = sum(len(d.sections) for d in documents)
  facts = sum(m.facts for m in materials)
  pairs = sum(len(m.pairs) for m in materials)
  texts = sum(len(m.texts) for m in materials)
  return {'sections': sections, 'facts': facts, 'pairs': pairs, 'texts': texts,
          'pairs_per_section_mean': pairs / max(sections, 1),
          'pairs_per_fact_mean': pairs / max(facts, 1),
          'texts_per_section_mean': texts / max(sections, 1),
          'rejected_duplicate': sum(m.rejected_duplicate for m in materials),
          'rejected_unsupported': sum(m.rejected_unsupported for m in materials)}


def texts_path(qa_path: Any) -> Any:
  """The study-text JSONL beside a qa_pairs JSONL ('qa_pairs.jsonl' -> 'qa_pairs.study.jsonl')."""
  return qa_path.with_name(qa_path.stem + '.study.jsonl')


def read_study_texts(paths: Iterable[Any]) -> list[StudyText]:
  """Reads StudyText records from JSONL files (missing files are skipped)."""
  return [StudyText.from_json(d) for p in paths if p.exists()
          for d in jsonl_files.read_jsonl(p)]
