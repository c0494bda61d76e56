"""Rule-based Q&A generation from section text: definitions, numeric facts, cloze questions.

Each fact gets `len(TEMPLATES[kind])` (= 3) paraphrased questions with the same answer, and a
reasoning trace that cites the section ("The "<title>" section states that ...").

Facts come from sentences of 6-50 words that are not caption/table-like (at most 35% of tokens
contain digits):
  * definition: '<Term> is/are a|an|the <definition>' (term <= 6 words, not starting with a
    pronoun, conjunction, evaluative adjective or relational noun such as 'other', 'main',
    'Since', 'drawback'; the definition not merely evaluative like 'a promising ...'), and
    '<X> is called/known as <Term>'.
  * numeric: a number (also ranges '650-800', thousands '1,037', '~0.8') followed by a unit from
    `UNIT_QUANTITIES`; the quantity name comes from a context keyword in the sentence ('power
    density', 'thickness', 'sintering', ...) or else from the unit.
  * cloze: a key term (acronym such as YSZ, chemical formula such as La0.6Sr0.4CoO3, or a
    defined term) that occurs at least twice in the section is masked in one sentence.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Iterable

from penrose_jax.data.ingest import Document, Section
from penrose_jax.data.segment import split_sentences
from penrose_jax.qa.records import QAPair

# (unit regex, unit category); longest alternatives first inside each category.
_MINUS = r'(?:-|−|–|⁻)'
UNIT_QUANTITIES: list[tuple[str, str]] = [
    (rf'(?:m|k)?W\s*cm{_MINUS}?2|(?:m|k)?W\s*/\s*cm2|(?:m|k)?W\s*cm⁻²', 'power density'),
    (rf'(?:m|μ|µ)?A\s*cm{_MINUS}?2|(?:m|μ|µ)?A\s*/\s*cm2', 'current density'),
    (rf'(?:m|μ|µ)?S\s*cm{_MINUS}1|(?:m|μ|µ)?S\s*/\s*cm', 'conductivity'),
    (r'(?:m)?Ω\s*·?\s*cm2|(?:m)?Ω\s*cm²|ohm\s*cm2', 'area-specific resistance'),
    (rf'g\s*cm{_MINUS}3|g\s*/\s*cm3', 'density'),
    (rf'm2\s*g{_MINUS}1|m2\s*/\s*g', 'specific surface area'),
    (rf'kJ\s*mol{_MINUS}1|kJ\s*/\s*mol|meV|eV', 'energy'),
    (rf'°C\s*min{_MINUS}1|°C\s*/\s*min|K\s*/\s*min|nm\s*/\s*min|nm\s*min{_MINUS}1|'
     rf'(?:m|μ)?L\s*min{_MINUS}1|ml\s*min{_MINUS}1|sccm', 'rate'),
    (r'°C|℃|K', 'temperature'),
    (r'GPa|MPa|kPa|mbar|bar|atm|Torr|Pa', 'pressure'),
    (r'nm|μm|µm|mm|cm|Å', 'length'),
    (r'wt\s?\.?\s?%|at\s?\.?\s?%|mol\s?\.?\s?%|vol\s?\.?\s?%|%', 'percentage'),
    (r'hours?|hrs?|h|min|days?', 'duration'),
    (r'mV|V', 'voltage'),
    (r'kHz|MHz|Hz', 'frequency'),
    (r'ppm', 'concentration'),
]
# Context keyword (regex) -> quantity name, per unit category; the keyword closest before the
# number wins.
CONTEXT_QUANTITIES: dict[str, list[tuple[str, str]]] = {
    'temperature': [(r'sinter', 'sintering temperature'), (r'calcin', 'calcination temperature'),
                    (r'anneal', 'annealing temperature'), (r'melt', 'melting temperature'),
                    (r'operat', 'operating temperature'), (r'transition', 'transition temperature'),
                    (r'fir(ed|ing)', 'firing temperature')],
    'length': [(r'thick', 'thickness'), (r'diameter', 'diameter'), (r'particle', 'particle size'),
               (r'grain', 'grain size'), (r'pore', 'pore size'), (r'length', 'length'),
               (r'lattice', 'lattice parameter'), (r'wavelength', 'wavelength')],
    'percentage': [(r'porosity', 'porosity'), (r'efficien', 'efficiency'),
                   (r'relative densit', 'relative density'), (r'conversion', 'conversion'),
                   (r'selectivity', 'selectivity'), (r'degradation', 'degradation'),
                   (r'loss', 'loss'), (r'content|doped|doping', 'content')],
    'voltage': [(r'open[- ]circuit|OCV', 'open-circuit voltage')],
    'energy': [(r'activation', 'activation energy'), (r'band ?gap', 'band gap')],
    'pressure': [(r'modulus', 'modulus'), (r'strength', 'strength'), (r'stress', 'stress'),
                 (r'partial pressure', 'partial pressure')],
    'power density': [(r'peak|maximum', 'peak power density')],
    'duration': [(r'sinter|calcin|anneal', 'treatment time'), (r'stab|test|operat', 'test duration')],
}

_NUMBER = (r'(?:~|≈|>|<|≥|≤)?\s?\d{1,3}(?:,\d{3})+(?:\.\d+)?|(?:~|≈|>|<|≥|≤)?\s?\d+(?:\.\d+)?')
_VALUE_RE = re.compile(
    rf'(?<![\w.−-])(?P<value>(?:{_NUMBER})(?:\s?(?:–|-|to|and)\s?(?:{_NUMBER}))?'
    rf'(?:\s?×\s?10{_MINUS}?\d+)?)\s?(?P<unit>' + '|'.join(f'(?:{u})' for u, _ in UNIT_QUANTITIES)
    + r')(?![\w/])')
_ACRONYM_RE = re.compile(r'(?<![\w-])(?:\d?[A-Z][A-Za-z0-9]*[A-Z][A-Za-z0-9]*)(?![\w-])')
_FORMULA_RE = re.compile(r'(?<![\w-])(?:[A-Z][a-z]?(?:\d+(?:\.\d+)?|[xyδ])?){2,}'
                         r'(?:[−-]δ)?(?![\w-])')
_DEFINITION_RE = re.compile(
    r'^(?:The |An? )?(?P<term>[A-Za-z0-9][\w\-()/’\' ]{1,60}?) (?P<verb>is|are) '
    r'(?P<definition>(?:a|an|the) .+?)\.?$')
_CALLED_RE = re.compile(
    r'^(?P<subject>.{5,120}?) (?:is|are) (?:called|known as|termed|referred to as) '
    r'(?:the |an? )?(?P<term>[\w\-() ]{2,50}?)\.?$')
_PRONOUNS = frozenset('it this that these those there which here one each such what he she they '
                      'we our its their this_ both all some most many several'.split())
_NOT_TERM_START = frozenset(
    'since when if because although while as after before in for on at by with other former '
    'latter first second third last result reason aim goal purpose difference advantage '
    'disadvantage drawback benefit problem question answer case'.split())
_EVALUATIVE = frozenset('promising key major good great common significant crucial critical '
                        'important well very potential typical new novel main useful simple '
                        'further better powerful suitable attractive'.split())

TEMPLATES: dict[str, tuple[str, ...]] = {
    'definition': ('What is {term}?',
                   'How does the "{section}" section define {term}?',
                   'According to "{doc_title}", what is meant by {term}?'),
    'called': ('What is {subject} called?',
               'What term does the "{section}" section use for {subject}?',
               'According to "{doc_title}", what name is given to {subject}?'),
    'numeric': ('According to the "{section}" section, what {quantity} completes this '
                'statement: "{masked}"?',
                'What {quantity} was reported in the statement "{masked}"?',
                'In "{doc_title}", which value of the {quantity} (in {unit}) fills the blank: '
                '"{masked}"?'),
    'cloze': ('Fill in the blank: "{masked}"',
              'Which term is missing from this sentence of the "{section}" section: '
              '"{masked}"?',
              'Complete the statement from "{doc_title}": "{masked}"'),
}
BLANK = '___'


@dataclasses.dataclass(frozen=True)
class Fact:
  """One extracted fact: kind, answer, the source sentence and template fields."""
  kind: str
  answer: str
  sentence: str
  fields: tuple[tuple[str, str], ...]


def usable_sentences(text: str, min_words: int = 6, max_words: int = 50) -> list[str]:
  """Sentences suitable for questions (length bounds, not table/caption-like)."""
  out = []
  for sentence in split_sentences(text):
    words = sentence.split()
    if not min_words <= len(words) <= max_words:
      continue
    if sum(any(c.isdigit() for c in w) for w in words) > 0.35 * len(words):
      continue
    if re.match(r'^(Figure|Fig\.|Table|Scheme)\s*\d', sentence):
      continue
    out.append(sentence)
  return out


def _quantity(category: str, sentence: str, start: int, end: int) -> str:
  best, best_pos = category, -1
  before = sentence[:start]
  for pattern, name in CONTEXT_QUANTITIES.get(category, []):
    for match in re.finditer(pattern, before, flags=re.I):
      if match.start() > best_pos:
        best, best_pos = name, match.start()
  if best_pos < 0:  # '10 μm thick': a keyword right after the value
    after = sentence[end:end + 30]
    for pattern, name in CONTEXT_QUANTITIES.get(category, []):
      if re.search(pattern, after, flags=re.I):
        return name
  return best


def _unit_category(unit: str) -> str:
  for pattern, category in UNIT_QUANTITIES:
    if re.fullmatch(pattern, unit):
      return category
  return 'value'


def extract_definitions(sentences: Iterable[str]) -> list[Fact]:
  """'<Term> is a/an/the <definition>' and '<X> is called <Term>' facts."""
  facts = []
  for sentence in sentences:
    match = _DEFINITION_RE.match(sentence)
    if match:
      term = match.group('term').strip()
      definition = match.group('definition')
      first_def_word = definition.split()[1].lower() if len(definition.split()) > 1 else ''
      first_term_word = term.split()[0].lower()
      if (len(term.split()) <= 6 and first_term_word not in _PRONOUNS and
          first_term_word not in _NOT_TERM_START and first_term_word not in _EVALUATIVE and
          ',' not in term and 3 <= len(definition.split()) <= 40 and
          first_def_word not in _EVALUATIVE and not re.search(r'\d', term)):
        answer = f'{term} {match.group("verb")} {definition}.'
        facts.append(Fact('definition', answer, sentence, (('term', term),)))
        continue
    match = _CALLED_RE.match(sentence)
    if match and match.group('subject').split()[0].lower() not in _PRONOUNS:
      subject = match.group('subject')
      subject = subject[0].lower() + subject[1:] if subject[1:2].islower() else subject
      facts.append(Fact('called', match.group('term').strip(), sentence,
                        (('subject', subject),)))
  return facts


def extract_numeric_facts(sentences: Iterable[str], max_per_sentence: int = 3) -> list[Fact]:
  """Number-with-unit facts; the value+unit is masked with `BLANK` in the question."""
  facts = []
  for sentence in sentences:
    for match in list(_VALUE_RE.finditer(sentence))[:max_per_sentence]:
      unit = match.group('unit')
      category = _unit_category(unit)
      answer = match.group(0).strip()
      masked = sentence[:match.start()] + BLANK + sentence[match.end():]
      quantity = _quantity(category, sentence, match.start(), match.end())
      facts.append(Fact('numeric', answer, sentence,
                        (('quantity', quantity), ('unit', unit), ('masked', masked))))
  return facts


def key_terms(text: str, min_count: int = 2) -> list[str]:
  """Acronyms and chemical formulas occurring at least `min_count` times, most frequent first."""
  counts: dict[str, int] = {}
  for regex in (_ACRONYM_RE, _FORMULA_RE):
    for match in regex.finditer(text):
      term = match.group(0)
      if len(term) >= 2 and not term.isdigit():
        counts[term] = counts.get(term, 0) + 1
  return [t for t, c in sorted(counts.items(), key=lambda kv: -kv[1]) if c >= min_count]


def extract_cloze_facts(sentences: Iterable[str], section_text: str,
                        extra_terms: Iterable[str] = ()) -> list[Fact]:
  """Masks one salient key term (see `key_terms`, plus `extra_terms`) per sentence."""
  terms = list(dict.fromkeys(list(extra_terms) + key_terms(section_text)))
  facts = []
  for sentence in sentences:
    for term in terms:
      match = re.search(rf'(?<![\w-]){re.escape(term)}(?![\w-])', sentence)
      if match and len(sentence.split()) >= 8:
        masked = sentence[:match.start()] + BLANK + sentence[match.end():]
        facts.append(Fact('cloze', term, sentence, (('masked', masked),)))
        break
  return facts


def _cite(sentence: str) -> str:
  if sentence[:1].isupper() and sentence[1:2].islower():
    sentence = sentence[0].lower() + sentence[1:]
  return sentence.rstrip('.')


def fact_to_pairs(fact: Fact, section: Section, doc_title: str) -> list[QAPair]:
  """Turns a fact into one QAPair per paraphrase template of its kind."""
  fields = dict(fact.fields, section=section.title, doc_title=doc_title)
  cited = f'The "{section.title}" section states that {_cite(fact.sentence)}.'
  if fact.kind == 'numeric':
    reasoning = f'{cited} So the {fields["quantity"]} is {fact.answer}.'
  elif fact.kind == 'cloze':
    reasoning = f'{cited} The missing term is therefore {fact.answer}.'
  else:
    reasoning = f'{cited} This answers the question directly.'
  return [QAPair(section.doc_id, section.title, section.order, template.format(**fields),
                 fact.answer, reasoning, 'rule') for template in TEMPLATES[fact.kind]]


def generate_section_qa(section: Section, doc_title: str = '',
                        max_facts_per_kind: int = 4) -> list[QAPair]:
  """Rule-based Q&A pairs for one section.

  Args:
    section: the section.
    doc_title: document title used in some templates.
    max_facts_per_kind: cap on definitions, numeric and cloze facts each (x3 templates).

  Returns:
    The pairs (3 paraphrases per fact), in fact order.
  """
  sentences = usable_sentences(section.text)
  definitions = extract_definitions(sentences)[:max_facts_per_kind]
  numeric = extract_numeric_facts(sentences)[:max_facts_per_kind]
  used = {f.sentence for f in definitions + numeric}
  defined_terms = [dict(f.fields)['term'] for f in definitions if f.kind == 'definition']
  cloze = extract_cloze_facts([s for s in sentences if s not in used], section.text,
                              defined_terms)[:max_facts_per_kind]
  pairs = []
  for fact in definitions + numeric + cloze:
    pairs.extend(fact_to_pairs(fact, section, doc_title or section.doc_id))
  return pairs


def generate_document_qa(document: Document, max_facts_per_kind: int = 4) -> list[QAPair]:
  """Rule-based Q&A pairs for every section of a document (section order)."""
  return [pair for section in document.sections
          for pair in generate_section_qa(section, document.title, max_facts_per_kind)]
