"""Facts of a section for study material: markup cleanup and rule-based fact extraction.

Works on any Markdown, LaTeX or plain section text: `clean_markup` removes what the ingest
readers leave in the text (**bold**, `code`, [links](url), $math$, \\SI{..}{..}, list markers,
table rows); `extract_facts` then finds, per sentence, values with units (generate_rules' units
plus 'percent', years and 'X of N' counts), definitions ('X is a/an/the Y', 'X is called Y'),
abbreviations ('long form (ABBR)'), relations ('X provides/contains/uses/... Y'), procedure steps
(passive 'X was <participle> ...') and, for sentences nothing else covers, named entities
(acronyms, chemical formulas such as La0.6Sr0.4CoO3, capitalised multiword names) as cloze
facts; naming clauses ('a mat that the team calls Kelpar-C') and, where nothing else applies,
'The X is Y' statements are facts too. `study_material` turns the facts into questions,
restatements and notes.
"""

from __future__ import annotations

import dataclasses
import re
import unicodedata

from penrose_jax.data.segment import split_sentences
from penrose_jax.qa import filtering, generate_rules

BLANK = generate_rules.BLANK
_DETERMINERS = frozenset('the a an this that these those its their each every our'.split())
_PRONOUN_START = frozenset('it this that these those there they we he she which one such here '
                           'both all some most many several'.split())
# Auxiliaries that end a passive or copula subject ("X was sintered", "X is 5 K").
AUX = r'is|are|was|were|has been|have been|had been|can be|could be|will be|may be'
RELATION_VERBS = {  # verb as written (3rd person present or past) -> past participle
    'provides': 'provided', 'contains': 'contained', 'uses': 'used', 'converts': 'converted',
    'produces': 'produced', 'requires': 'required', 'forms': 'formed', 'shows': 'shown',
    'exhibits': 'exhibited', 'gives': 'given', 'makes': 'made', 'reaches': 'reached',
    'increases': 'increased', 'reduces': 'reduced', 'decreases': 'decreased',
    'improves': 'improved', 'blocks': 'blocked', 'conducts': 'conducted', 'limits': 'limited',
    'controls': 'controlled', 'determines': 'determined', 'enables': 'enabled',
    'prevents': 'prevented', 'replaces': 'replaced', 'creates': 'created', 'achieves': 'achieved',
    'delivers': 'delivered', 'yields': 'yielded', 'stores': 'stored', 'absorbs': 'absorbed',
    'emits': 'emitted', 'supports': 'supported', 'causes': 'caused', 'lowers': 'lowered',
    'raises': 'raised', 'includes': 'included', 'describes': 'described', 'measures': 'measured',
    'showed': 'shown', 'exhibited': 'exhibited', 'provided': 'provided', 'produced': 'produced',
    'reached': 'reached', 'achieved': 'achieved', 'yielded': 'yielded', 'delivered': 'delivered',
    'contained': 'contained', 'used': 'used', 'gave': 'given', 'made': 'made',
    'increased': 'increased', 'reduced': 'reduced', 'decreased': 'decreased',
    'improved': 'improved', 'enabled': 'enabled', 'replaced': 'replaced', 'created': 'created',
    'caused': 'caused', 'lowered': 'lowered', 'raised': 'raised', 'formed': 'formed',
}
IRREGULAR_PAST = {'made': 'made', 'grown': 'grew', 'built': 'built', 'taken': 'took',
                   'given': 'gave', 'shown': 'showed', 'found': 'found', 'held': 'held',
                   'kept': 'kept', 'done': 'did', 'spun': 'spun', 'cast': 'cast',
                   'ground': 'ground', 'drawn': 'drew', 'written': 'wrote', 'run': 'ran',
                   'known': 'knew', 'chosen': 'chose', 'brought': 'brought'}
_PARTICIPLE = r'[a-z]+ed|' + '|'.join(IRREGULAR_PAST)
INTRO_RE = re.compile(
    r'^(?P<intro>(?:At|In|On|During|After|Before|Because of|For|Under|With|Using|Upon|Below|'
    r'Above|Between|Compared with|Compared to|Unlike|Like|Through|Within|Without)\b[^,]{2,80}),'
    r'\s+(?P<main>[^,].*)$')
_PASSIVE_RE = re.compile(rf'^(?P<subj>.{{2,90}}?) (?P<aux>{AUX}) (?P<part>{_PARTICIPLE})'
                         r'(?: (?P<rest>.+?))?\.?$')
_RELATION_RE = re.compile(r'^(?P<subj>.{2,90}?) (?P<verb>' + '|'.join(RELATION_VERBS) +
                          r') (?P<obj>.+?)\.?$')
_AGENT_RE = re.compile(r'\bby (?P<agent>(?:[A-Z][\w.-]*|the|a|an|[a-z][\w-]*)(?: [\w.-]+){0,6}?)'
                       r'(?=(?: in \d{4}| at | in | on | for | using |, |$))')
_YEAR_RE = re.compile(r'\b(?P<prep>[Ii]n) (?P<value>1[6-9]\d\d|20\d\d)\b')
_PERCENT_RE = re.compile(r'(?<![\w.])(?P<value>\d+(?:\.\d+)?(?:\s?(?:-|–|to)\s?\d+(?:\.\d+)?)?)'
                         r' (?P<unit>percent|per cent)\b')
_OF_COUNT_RE = re.compile(r'\b(?P<quantity>(?:[a-z][a-z-]+ ){0,2}[a-z][a-z-]+) of '
                          r'(?P<value>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)'
                          r'(?![\w.%°×^:,]|\s?[%°×/(]|\s?(?:[a-zA-Zµμ]+\b))')
# Units generate_rules does not know: unit -> category (its CONTEXT_QUANTITIES still apply).
_EXTRA_UNITS = {'m': 'length', 'km': 'length', 'kg': 'mass', 'g': 'mass', 'mg': 'mass',
                't': 'mass', 's': 'duration', 'ms': 'duration', 'L': 'volume', 'mL': 'volume',
                'A': 'current', 'mA': 'current', 'W': 'power', 'kW': 'power', 'MW': 'power',
                'J': 'energy', 'kJ': 'energy', 'MJ': 'energy', 'Wh': 'energy', 'kWh': 'energy',
                'mAh': 'capacity', 'degrees': 'temperature', 'nm/min': 'rate'}
_EXTRA_UNIT_RE = re.compile(
    r'(?<![\w.,])(?P<value>\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?)\s?(?P<unit>' +
    '|'.join(sorted(map(re.escape, _EXTRA_UNITS), key=len, reverse=True)) +
    r')(?![\w/])(?!\s?(?:/|per\b|cm|m\b|g\b|mol\b|h\b|s\b))')  # not 'mg cm−2', 'mL/(g·h)'
# '2,700 thermal cycles': a count and what is counted (a plural noun within three words).
_NOUN_COUNT_RE = re.compile(r'(?<![\w.,])(?P<value>\d{1,3}(?:,\d{3})+|\d+)\s(?P<quantity>'
                            r'(?:[a-z][a-z-]+\s){0,2}[a-z][a-z-]+s)\b')
# 'a carbonised hemp fibre mat that the Tessaly team calls Kelpar-C', 'a molecule they named X'.
_NAMING_RE = re.compile(
    r'\b(?P<np>(?:an?|the) (?:[\w-]+ ){0,5}[\w-]+) (?:(?:that|which) )?(?:they|we|he|she|the '
    r'(?:[\w-]+ ){0,3}[\w-]+) (?:calls?|called|names?|named|terms?|termed|dubs?|dubbed) '
    r'(?P<term>[A-Za-z][\w-]*)')
_COPULA_RE = re.compile(r'^(?P<subj>(?:The|An?) (?:[\w-]+ ){0,6}[\w-]+) (?P<verb>is|are|was|were) '
                        r'(?P<obj>[a-z][\w-]*(?: [\w-]+){0,7})(?:,|$)')
_NAME_RE = re.compile(r'(?<![\w-])[A-Z][a-z]+(?:[ -](?:(?:of|de|van|von|der|la)[ -])?'
                      r'[A-Z][a-z]+)+(?![\w-])')
_ABBR_RE = re.compile(r'\((?P<abbr>[A-Z][A-Za-z0-9-]*[A-Z][A-Za-z0-9]*?)s?\)')
WH = {'temperature': 'At what temperature', 'duration': 'For how long',
      'length': 'At what length', 'pressure': 'At what pressure',
      'rate': 'At what rate', 'year': 'In which year', 'voltage': 'At what voltage',
      'frequency': 'At what frequency'}


@dataclasses.dataclass(frozen=True)
class StudyFact:
  """One fact of a section.

  Attributes:
    kind: 'numeric', 'definition', 'called', 'abbreviation', 'relation', 'procedure', 'copula'
      ('The X is Y') or 'entity'.
    span: the short answer; it occurs in the cleaned section text.
    sentence: the cleaned source sentence.
    subject: what the fact is about ('' when unknown); occurs in the sentence.
    statement: the fact as one sentence (the sentence-form answer).
    fields: kind-specific template fields as (name, value) pairs.
  """
  kind: str
  span: str
  sentence: str
  subject: str
  statement: str
  fields: tuple[tuple[str, str], ...] = ()


# ------------------------------------------------------------------------------ text cleanup

_MATH_MACROS = {r'\circ': '°', r'\times': '×', r'\mu': 'μ', r'\sim': '~', r'\approx': '≈',
                r'\pm': '±', r'\le': '≤', r'\ge': '≥', r'\leq': '≤', r'\geq': '≥',
                r'\delta': 'δ', r'\Omega': 'Ω', r'\alpha': 'α', r'\beta': 'β', r'\%': '%',
                r'\,': ' ', r'\;': ' '}
_SI_UNITS = {r'\degreeCelsius': '°C', r'\celsius': '°C', r'\kelvin': 'K', r'\percent': '%',
             r'\micro': 'μ', r'\milli': 'm', r'\nano': 'n', r'\kilo': 'k', r'\centi': 'c',
             r'\metre': 'm', r'\meter': 'm', r'\hour': 'h', r'\minute': 'min', r'\second': 's',
             r'\volt': 'V', r'\watt': 'W', r'\ampere': 'A', r'\pascal': 'Pa', r'\gram': 'g'}


def _math_to_text(math: str) -> str:
  math = re.sub(r'\\(?:mathrm|text|mathit|mathbf|ce)\s*{([^{}]*)}', r'\1', math)
  # Whole macro names only (r'\le' must not eat the start of r'\left').
  math = re.sub(r'\\(?:[A-Za-z]+|[%,;])',
                lambda m: _MATH_MACROS.get(m.group(0), m.group(0)), math)
  math = re.sub(r'[_^]{([^{}]*)}', r'\1', math)
  math = re.sub(r'[_^](\S)', r'\1', math)
  return re.sub(r'\\[A-Za-z]+', '', math).replace('{', '').replace('}', '')


def clean_markup(text: str) -> str:
  """Plain prose from Markdown / LaTeX residue; tables dropped, list items one per line.

  Args:
    text: a section's text as the ingest readers return it.

  Returns:
    The text without markup; every list item and paragraph on its own line.
  """
  def si(match: re.Match) -> str:
    unit = re.sub(r'\\[A-Za-z]+', lambda m: _SI_UNITS.get(m.group(0), m.group(0)), match.group(2))
    return f'{match.group(1)} {unit}'.replace('\\per', '/')

  text = re.sub(r'\\SI\s*{([^{}]*)}\s*{([^{}]*)}', si, text)
  # NFKC: 'cm³' -> 'cm3', 'cm⁻²' -> 'cm−2', ligatures; the forms the unit patterns know (the
  # support filter normalises the same way).
  text = unicodedata.normalize('NFKC', text)
  text = re.sub(r'\\(?:num|ce)\s*{([^{}]*)}', r'\1', text)
  text = re.sub(r'\$([^$]{1,200})\$', lambda m: _math_to_text(m.group(1)), text)
  text = text.replace(r'\%', '%')
  # '2×10^-5 Torr' -> '2×10−5 Torr', the form the unit patterns know (positive powers stay).
  text = re.sub(r'10\^\{?[-−](\d+)\}?', r'10−\1', text)
  text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', text)  # links and images
  text = re.sub(r'`([^`]*)`', r'\1', text)
  text = re.sub(r'(\*\*|__)(.+?)\1', r'\2', text)
  text = re.sub(r'(?<![\w*])\*(?!\s)([^*]+?)(?<!\s)\*(?![\w*])', r'\1', text)
  lines = []
  for paragraph in re.split(r'\n+', text):
    paragraph = paragraph.strip()
    if not paragraph or paragraph.startswith('|'):  # Markdown tables
      continue
    # A list paragraph (joined into one line by the reader): one item per line.
    if re.match(r'^(?:[-*+>]|\d{1,2}[.)])\s+', paragraph):
      items = re.split(r'(?:^|\s)(?:[-*+>]|\d{1,2}[.)])\s+(?=\S)', paragraph)
      lines.extend(item.strip() for item in items if item.strip())
    else:
      lines.append(paragraph)
  return '\n'.join(' '.join(line.split()) for line in lines)


_UNIT_END_RE = re.compile(r'\d\s?(?:' + '|'.join(f'(?:{u})' for u, _ in
                                                generate_rules.UNIT_QUANTITIES) + r')$')


def _split_after_units(text: str) -> list[str]:
  """Splits 'about 1.1 V. The ...', which split_sentences keeps together (a capital before a
  period looks like an initial there), where a number and unit end the first part."""
  out, start = [], 0
  for match in re.finditer(r'(?<=\.)\s+(?=[A-Z])', text):
    if _UNIT_END_RE.search(text[start:match.start() - 1]):
      out.append(text[start:match.start()])
      start = match.end()
  return out + [text[start:]]


def study_sentences(text: str, min_words: int = 4, max_words: int = 60) -> list[str]:
  """Fact-bearing sentences of a section (markup removed, list items kept as sentences).

  Args:
    text: section text.
    min_words: shorter sentences are skipped.
    max_words: longer sentences are skipped.

  Returns:
    The sentences, each ending without a trailing period.
  """
  out = []
  for line in clean_markup(text).splitlines():
    for sentence in [p for piece in split_sentences(line) for p in _split_after_units(piece)]:
      words = sentence.split()
      if not min_words <= len(words) <= max_words:
        continue
      if sum(any(c.isdigit() for c in w) for w in words) > 0.4 * len(words):
        continue  # table-like
      if re.match(r'^(Figure|Fig\.|Table|Scheme)\s*\d', sentence):
        continue
      out.append(sentence.rstrip(' .;:'))
  return out


def norm(text: str) -> str:
  """Word-aligned comparison key: ' ' + normalised tokens (and unit symbols) + ' '."""
  tokens = re.findall(r'[^\W_]+|[%°±~≈<>≤≥]', filtering.normalise_text(text))
  return ' ' + ' '.join(tokens) + ' '


def span_supported(span: str, section_text: str) -> bool:
  """Whether a short answer occurs (whole words, normalised) in the markup-free section text.

  Args:
    span: the short answer.
    section_text: the section's text (markup is removed here).

  Returns:
    True when the normalised span is a word-aligned substring of the normalised section.
  """
  key = norm(span)
  return key.strip() != '' and key in norm(clean_markup(section_text))


# ----------------------------------------------------------------------------- extraction

def cap(text: str) -> str:
  """Upper-cases the first character."""
  return text[:1].upper() + text[1:]


def lower_first(text: str) -> str:
  """'At the cathode' -> 'at the cathode' (a leading phrase moved to the end)."""
  return text[:1].lower() + text[1:]


def low(text: str) -> str:
  """Lower-cases the first word for use mid-sentence ('The anode' -> 'the anode'), unless it
  looks like part of a name (a capitalised next word: 'Heike Kamerlingh Onnes') or an acronym."""
  words = text.split(' ')
  first = words[0]
  if first.lower() in _DETERMINERS:
    return text[:1].lower() + text[1:]
  if (first[1:] != first[1:].lower() or len(first) <= 3 or  # 'Pt', 'Ni': element symbols
      (len(words) > 1 and words[1][:1].isupper())):
    return text
  return text[:1].lower() + text[1:]


def _subject(prefix: str) -> str:
  """The noun phrase before the verb, after any leading clause ('At 800 °C, the cell' -> ...)."""
  subject = prefix.rsplit(', ', 1)[-1].strip()
  # '..., and stage temperature was': the conjunction is not part of the subject.
  subject = re.sub(r'^(?:and|but|or|while|whereas|thus|so|then|also)\s+', '', subject, flags=re.I)
  words = subject.split()
  while len(words) > 1 and words[-1].endswith('ly'):  # 'the peak power density sharply'
    words.pop()
  subject = ' '.join(words)
  if not 1 <= len(words) <= 12 or words[0].lower() in _PRONOUN_START:
    return ''
  if re.search(r'\b(?:which|that|who|where|when|if|because|while)\b', subject, re.I):
    return ''
  return subject


def _core(sentence: str, subject: str) -> str:
  """The sentence from its subject on (a leading clause moved to the end), with a period."""
  match = INTRO_RE.match(sentence)
  if match and match.group('main').startswith(subject):
    return f'{cap(match.group("main"))} {lower_first(match.group("intro"))}.'
  index = sentence.find(subject) if subject else -1
  return cap(sentence[index:] if index > 0 else sentence) + '.'


def _subject_before(sentence: str, start: int) -> tuple[str, str, str]:
  """(subject, verb, text between verb and `start`) for the last verb before `start`."""
  verbs = list(re.finditer(rf'\b(?:{AUX}|has|have|had|' + '|'.join(RELATION_VERBS) + r')\b',
                           sentence[:start]))
  for verb in reversed(verbs):  # the verb closest to the value
    subject = _subject(sentence[:verb.start()])
    middle = sentence[verb.end():start].strip()
    if subject and len(middle.split()) <= 8 and not re.search(r'[,;:]|\band\b', middle):
      return subject, verb.group(0), middle
  return '', '', ''


def _numeric_facts(sentence: str) -> list[StudyFact]:
  found = []  # (start, end, value text, quantity, unit, category)
  for fact in generate_rules.extract_numeric_facts([sentence]):
    fields = dict(fact.fields)
    start = sentence.find(fact.answer)
    category = generate_rules._unit_category(fields['unit'])  # pylint: disable=protected-access
    found.append((start, start + len(fact.answer), fact.answer, fields['quantity'],
                  fields['unit'], category))
  for regex, category in ((_PERCENT_RE, 'percentage'), (_EXTRA_UNIT_RE, 'unit'),
                          (_YEAR_RE, 'year'), (_OF_COUNT_RE, 'count'), (_NOUN_COUNT_RE, 'count')):
    for match in regex.finditer(sentence):
      start, end = match.span('value') if category not in ('percentage', 'unit') else match.span()
      if any(s < end and start < e for s, e, *_ in found):
        continue
      unit = match.group('unit') if category in ('percentage', 'unit') else ''
      if category == 'unit':
        category = _EXTRA_UNITS[unit]
        # pylint: disable-next=protected-access
        quantity = generate_rules._quantity(category, sentence, start, end)
      elif category == 'count':
        quantity = match.group('quantity')
        if quantity.split()[-1] in ('one', 'part', 'series', 'out', 'times', 'is', 'was', 'has'):
          continue
        quantity = quantity if regex is _OF_COUNT_RE else f'number of {quantity}'
      else:
        quantity = category
      found.append((start, end, sentence[start:end], quantity, unit, category))
  facts = []
  for start, end, value, quantity, unit, category in sorted(found)[:3]:
    subject, verb, middle = _subject_before(sentence, start)
    masked = sentence[:start] + BLANK + sentence[end:]
    after = sentence[end:].split(', ')[0].rstrip()
    facts.append(StudyFact(
        'numeric', value, sentence, subject, _core(sentence, subject) if subject else
        cap(sentence) + '.',
        (('quantity', quantity), ('unit', unit), ('category', category), ('masked', masked),
         ('verb', verb), ('middle', middle), ('after', after))))
  return facts


def _long_form(words: list[str], abbr: str) -> str:
  """The shortest run of words before '(ABBR)' whose letters spell ABBR (Schwartz-Hearst-like)."""
  letters = [c.lower() for c in abbr if c.isalnum()]
  for n in range(1, min(len(words), len(letters) + 4) + 1):
    candidate = ' '.join(words[-n:]).strip(',;:')
    if not candidate or candidate[0].lower() != letters[0]:
      continue
    position = 0
    text = candidate.lower()
    for c in letters:
      position = text.find(c, position) + 1
      if position == 0:
        break
    else:
      return candidate
  for n in range(1, min(len(words), len(letters) + 3) + 1):  # letters as initials, any order
    candidate = ' '.join(words[-n:]).strip(',;:')
    initials = {p[0].lower() for p in re.split(r'[\s–-]+', candidate) if p}
    if set(letters[:3]) <= initials and candidate[:1].isalpha():
      return candidate
  return ''


def _abbreviation_facts(sentence: str) -> list[StudyFact]:
  facts = []
  for match in _ABBR_RE.finditer(sentence):
    abbr = match.group('abbr')
    words = sentence[:match.start()].split()[-10:]
    long = _long_form(words, abbr)
    # A long form with digits or the abbreviation's own stem ('GDC film at 500 °C (GDC-H)') is a
    # label, not a spelled-out name.
    stem = re.split(r'[-–]', abbr)[0]
    if long and long != abbr and len(long.split()) <= 8 and not re.search(r'\d', long) and \
        stem not in long and not re.fullmatch(r'[IVX]+', abbr) and \
        not re.search(r'\b(?:is|are|was|were|has|have|had)\b', long):
      facts.append(StudyFact('abbreviation', abbr, sentence, long, f'{abbr} stands for {long}.',
                             (('long', long),)))
  return facts


def _definition_facts(sentence: str) -> list[StudyFact]:
  facts = []
  for fact in generate_rules.extract_definitions([sentence]):
    fields = dict(fact.fields)
    if fact.kind == 'definition':
      term = fields['term']
      definition = fact.answer[len(term):].split(' ', 2)[-1].rstrip('.')
      # generate_rules drops a leading article; keep it ('What is the standard anode?').
      article = re.match(rf'^(The|An?) {re.escape(term)}\b', sentence)
      term = f'{article.group(1).lower()} {term}' if article else term
      facts.append(StudyFact('definition', definition, sentence, term,
                             cap(term) + fact.answer[len(fields['term']):], (('term', term),)))
    elif ',' not in fields['subject'] and not re.search(r'\d', fields['subject']) and \
        fields['subject'].split()[-1].lower() not in _PRONOUN_START | {'that', 'which', 'and',
                                                                      'or', 'but'}:
      facts.append(StudyFact('called', fact.answer, sentence, fields['subject'],
                             cap(sentence) + '.', (('term', fact.answer),)))
  return facts


def _naming_facts(sentence: str) -> list[StudyFact]:
  """'a mat that the team calls Kelpar-C' -> 'called' facts (the name and what it names)."""
  facts = []
  for match in _NAMING_RE.finditer(sentence):
    np_, term = re.sub(r' (?:that|which)$', '', match.group('np')), match.group('term')
    np_ = np_[0].lower() + np_[1:] if np_.split()[0] in ('A', 'An', 'The') else np_
    if term.lower() not in _DETERMINERS | _PRONOUN_START | {'as', 'after', 'for'}:
      facts.append(StudyFact('called', term, sentence, np_, f'{cap(np_)} is called {term}.',
                             (('term', term),)))
  return facts


_NOT_NOUN_START = frozenset(
    'not also very more less then used made about to always thus so therefore how what why whether '
    'that which still often usually generally typically much too quite rather'.split())
_LONE_ADJECTIVES = frozenset(
    'low high small large good poor fast slow uniform clear simple weak strong stable dense thin '
    'thick hard soft easy difficult possible necessary same different new old rare'.split())


def _copula_facts(sentence: str) -> list[StudyFact]:
  """'The substrate is strontium lanthanum aluminate' (no article after the verb)."""
  intro = INTRO_RE.match(sentence)
  match = _COPULA_RE.match(intro.group('main') if intro else sentence)
  if not match:
    return []
  obj = match.group('obj')
  words = obj.split()
  # Noun phrases only: no adverb or participle first, no lone adjective ('The choice was
  # deliberate', 'The voltage is low').
  if words[0] in _NOT_NOUN_START or words[0].endswith(('ed', 'ly', 'ing')) or words[-1] == 'than':
    return []
  if len(words) == 1 and (words[0] in _LONE_ADJECTIVES or words[0].endswith(
      ('ive', 'ous', 'al', 'ble', 'ful', 'ic', 'ar', 'ent', 'ant', 'ate', 'er', 'est'))):
    return []
  subject = match.group('subj')
  verb = match.group('verb')
  return [StudyFact('copula', obj, sentence, subject, f'{cap(subject)} {verb} {obj}.',
                    (('verb', verb),))]


def _clause_facts(sentence: str) -> list[StudyFact]:
  """Procedure (passive) and relation facts of the sentence's main clause."""
  intro = INTRO_RE.match(sentence)
  clause = intro.group('main') if intro else sentence
  match = _PASSIVE_RE.match(clause)
  if match and match.group('part') not in ('called', 'termed', 'based', 'needed'):
    subject = _subject(match.group('subj'))
    # The step itself, without a trailing relative clause (', which is called ...').
    rest = re.split(r', (?:which|who|where|while|whereas|but|having|being)\b|; ',
                    match.group('rest') or '')[0]
    rest = rest.strip()
    if subject and 1 <= len(rest.split()) <= 25:
      agent = _AGENT_RE.search(rest)
      return [StudyFact('procedure', f'{match.group("part")} {rest}', sentence, subject,
                        _core(sentence, subject),
                        (('aux', match.group('aux')), ('part', match.group('part')),
                         ('rest', rest), ('agent', agent.group('agent') if agent else '')))]
  match = _RELATION_RE.match(clause)
  if match:
    subject = _subject(match.group('subj'))
    # Cut at a following clause (', which ...', '; ...', ', each atom has ...').
    obj = re.split(r', (?:which|where|while|and|but)\b|; |, (?=(?:\S+ ){1,2}(?:has|have|is|are|was|'
                   r'were)\b)', match.group('obj'))[0].strip()
    if subject and 1 <= len(obj.split()) <= 20:
      return [StudyFact('relation', obj, sentence, subject,
                        f'{cap(subject)} {match.group("verb")} {obj}.',
                        (('verb', match.group('verb')),))]
  return []


def section_entities(text: str) -> list[str]:
  """Acronyms, chemical formulas and capitalised multiword names of a text, first seen first."""
  cleaned = clean_markup(text)
  found = []
  # pylint: disable-next=protected-access
  for regex in (generate_rules._ACRONYM_RE, generate_rules._FORMULA_RE, _NAME_RE):
    for match in regex.finditer(cleaned):
      term = match.group(0)
      starts_sentence = re.search(r'(?:^|[.!?]\s+)$', cleaned[:match.start()]) is not None
      if regex is _NAME_RE and (starts_sentence and term.split()[0].lower() in
                                _DETERMINERS | _PRONOUN_START | {'in', 'at', 'for', 'with'}):
        continue
      if _UNIT_END_RE.search('1 ' + term) or re.fullmatch(r'[IVX]+', term):  # units, numerals
        continue
      if len(term) >= 2 and not term.isdigit():
        found.append((match.start(), term))
  terms = list(dict.fromkeys(term for _, term in sorted(found)))
  return [t for t in terms if not (t.endswith('s') and t[:-1] in terms)]  # 'SOFCs' -> 'SOFC'



def extract_facts(section_text: str, max_facts: int = 0) -> list[StudyFact]:
  """Every fact of a section (module docstring), in sentence order.

  Args:
    section_text: the section's text.
    max_facts: keep at most this many (0 = all).

  Returns:
    The facts; entity cloze facts only for sentences no other fact covers.
  """
  entities = section_entities(section_text)
  facts: list[StudyFact] = []
  for sentence in study_sentences(section_text):
    found = (_numeric_facts(sentence) + _definition_facts(sentence) + _naming_facts(sentence) +
             _abbreviation_facts(sentence) + _clause_facts(sentence))
    found = found or _copula_facts(sentence)
    if not found:
      for entity in entities:
        match = re.search(rf'(?<![\w-]){re.escape(entity)}(?![\w-])', sentence)
        if match and len(sentence.split()) >= 6:
          masked = sentence[:match.start()] + BLANK + sentence[match.end():]
          found = [StudyFact('entity', entity, sentence, '', cap(sentence) + '.',
                             (('masked', masked),))]
          break
    facts.extend(found)
  return facts[:max_facts] if max_facts else facts


