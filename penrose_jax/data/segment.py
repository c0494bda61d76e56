"""Heuristic segmentation of plain text (e.g. PDF/XML extractions, one sentence per line).

Rules, in order, for each line:
  * A doubled title on the first line ('T T authors affiliations ...', as in PMC text dumps) gives
    the document title; the rest of that line (authors, affiliations) is dropped. Otherwise a
    short first line without a final period is the title.
  * Heading lines start with a known section name (Abstract, Background, Introduction,
    Experimental [Section|Procedures|Details], Materials and Methods, Methods, Results [and
    Discussion], Discussion, Conclusion(s) [and Outlook], Summary and ...), optionally numbered
    ('2.', '2.1'), followed by the end of line, ':', a section number, or a capitalised word (the
    heading is glued to the first sentence). Each name starts a section only once per document.
    Before the first heading, 'Background'/'Introduction' may also start mid-line (after the
    keywords list).
  * Back-matter headings (Acknowledgements, References, Author Contributions, Conflicts of
    Interest, Additional Information, Supporting Information, Funding, Abbreviations) and
    'This work was supported ...' lines start a dropped region that lasts until the next body
    heading. Figure/table caption lines ('Figure 3 FE-SEM ...', 'xxx_Table 2 ...') are dropped.
  * A trailing section number ('... discussed. 2.2.' or 'Kinetics of Oxidation 2.4.2.') marks a
    sub-section boundary before the next line; a short heading-like line with such a number is a
    sub-section title and is not kept as text.
  * Sections longer than `max_words` are cut into parts of at most `max_words` words (at least
    `min_words` where possible), preferably at sub-section boundaries.
  * Text without any heading is cut into 'Part k' groups of `min_words`..`max_words` words.
"""

from __future__ import annotations

import re

DEFAULT_MAX_WORDS = 400
DEFAULT_MIN_WORDS = 150

_BODY_HEADINGS = [
    'Abstract', 'Background', 'Introduction', 'Experimental Section', 'Experimental Procedures',
    'Experimental Procedure', 'Experimental Details', 'Experimental Methods', 'Experimental',
    'Materials and Experimental Procedures', 'Materials and Methods', 'Methods and Materials',
    'Methodology', 'Methods', 'Results and Discussions', 'Results and Discussion',
    'Result and Discussion', 'Results', 'Discussion', 'Conclusions and Outlook',
    'Conclusions and Perspectives', 'Conclusions', 'Conclusion', 'Concluding Remarks',
    'Summary and Future Perspectives', 'Summary and Outlook', 'Summary and Conclusions',
]
_BACK_HEADINGS = [
    'Acknowledgements', 'Acknowledgments', 'Acknowledgement', 'Acknowledgment', 'References',
    'Bibliography', 'Author Contributions', 'Conflicts of Interest', 'Conflict of Interest',
    'Competing Interests', 'Competing financial interests', 'Additional Information',
    'Supporting Information', 'Supplementary Information', 'Supplementary Material', 'Funding',
    'Abbreviations', 'Notes',
]


def _names_pattern(names: list[str]) -> str:
  ordered = sorted(names, key=len, reverse=True)  # longest first: 'Results and Discussion'
  return '|'.join(re.escape(n).replace(r'\ ', r'\s+') for n in ordered)


_NUMBER_PREFIX = r'(?:(?:[1-9]\d?|[IVX]{1,4})(?:\.\d{1,2})*\.?\s+)?'
_LABEL = r'[1-9]\d?(?:\.\d{1,2}){1,3}\.?'
_BODY_RE = re.compile(
    rf'^{_NUMBER_PREFIX}(?P<name>(?i:{_names_pattern(_BODY_HEADINGS)}))'
    rf'(?::\s*|\s+(?={_LABEL}$)|\s+(?=[A-Z0-9(\[])|\s*$)')
_BACK_RE = re.compile(
    rf'^{_NUMBER_PREFIX}(?P<name>(?i:{_names_pattern(_BACK_HEADINGS)}))(?::|\s|$)')
_MIDLINE_INTRO_RE = re.compile(r'(?<=\s)(?P<name>Background|Introduction)(?::\s*|\s+)(?=[A-Z])')
_ACK_SENTENCE_RE = re.compile(
    r'^(This|The present) (work|research|study|project) (was|has been|is) (\w+ )?'
    r'(supported|funded|sponsored)', re.I)
_CAPTION_RE = re.compile(r'^((Figure|Fig\.|Table|Scheme) \d+[a-z]?\s+(?=[A-Z(])|\S+_Table \d+)')
_TRAILING_LABEL_RE = re.compile(rf'\s(?P<label>{_LABEL})$')
_LEADING_LABEL_RE = re.compile(rf'^{_LABEL}\s+(?=[A-Z])')
_AFFILIATION_RE = re.compile(
    r'\b(University|Universität|Department|Institute|Laboratory|Correspondence|E-mail|'
    r'Academic Editor|Received|Accepted)\b|@')
_GLUED_TITLE_RE = re.compile(
    r"^(?P<title>[A-Z][\w\-’'/,]*(?:\s+(?:\([\w\-]+\)|[A-Z0-9][\w\-’'/,]*|of|and|in|on|for|the|"
    r"with|by|to|at|during|versus|vs\.|under|from|as))*?)\s+(?=(?:The|A|An|In|To|For|As|This|"
    r"These|We|Our|It|Figure|Fig\.|Table|Here|First|After|Since|From|Using|Two|Three|Several|"
    r"Many|Most|All|Both|Samples?|One)\s)")
_HEADING_END_STOPWORDS = frozenset(
    'a an the of to in on at by for with and or was were is are be been as than about from '
    'approximately around nearly over under up ca x y z pH'.split())


def is_back_matter_title(title: str) -> bool:
  """True for section titles of back matter (References, Acknowledgements, ...)."""
  return bool(_BACK_RE.match(title.strip())) and len(title.split()) <= 4


def _doubled_title(line: str) -> tuple[str, str] | None:
  words = line.split()
  for k in range(min(len(words) // 2, 60), 2, -1):
    if words[:k] == words[k:2 * k]:
      return ' '.join(words[:k]), ' '.join(words[2 * k:])
  return None


def split_trailing_label(line: str) -> tuple[str, str | None, bool]:
  """Splits a trailing sub-section number off a line.

  Args:
    line: one stripped line.

  Returns:
    (text without the label, label or None, whether the remaining text is a heading only).
  """
  match = _TRAILING_LABEL_RE.search(line)
  if not match:
    return line, None, False
  rest = line[:match.start()].rstrip()
  if not rest:
    return '', match.group('label'), True
  if rest[-1] in '.?!':  # '... is discussed. 2.2.'
    return rest, match.group('label'), False
  words = rest.split()
  heading_like = (len(words) <= 14 and rest[0].isupper() and
                  words[-1].lower() not in _HEADING_END_STOPWORDS and not rest[-1].isdigit())
  if heading_like:  # 'Kinetics of Oxidation 2.4.2.'
    return rest, match.group('label'), True
  return line, None, False  # '... the pH was 1.5.' is a sentence, not a label


def glued_subtitle(line: str) -> str | None:
  """Guesses a sub-section title glued to a first sentence ('Thermal Analysis (TGA) The ...').

  Args:
    line: the first line after a sub-section boundary.

  Returns:
    The title words (2-10 words, Title Case run before a sentence start) or None.
  """
  match = _GLUED_TITLE_RE.match(line)
  if not match:
    return None
  words = match.group('title').split()
  if not 1 <= len(words) <= 10 or match.group('title').endswith(','):
    return None
  return match.group('title')


def split_sentences(text: str) -> list[str]:
  """Splits text into sentences at '. ', '? ', '! ' before a capital letter or digit.

  Common abbreviations (et al., Fig., e.g., i.e., ca., vs., Eq., No., approx.) do not end a
  sentence, nor does a period after a single capital letter (initials).

  Args:
    text: any text.

  Returns:
    The sentences, whitespace-normalised, empty ones dropped.
  """
  text = ' '.join(text.split())
  pieces = re.split(r'(?<=[.!?])\s+(?=[A-Z0-9(“"])', text)
  sentences: list[str] = []
  for piece in pieces:
    if sentences and re.search(
        r'(\bet al|\bFigs?|\be\.g|\bi\.e|\bca|\bvs|\bEqs?|\bNo|\bapprox|\bRefs?|\bSec|'
        r'\bresp|\b[A-Z])\.$', sentences[-1]):
      sentences[-1] += ' ' + piece
    else:
      sentences.append(piece)
  return [s for s in sentences if s]


def text_units(text: str) -> list[str]:
  """Units to group into sections: paragraphs if there are blank lines, else lines."""
  paragraphs = [p.strip() for p in re.split(r'\n\s*\n', text) if p.strip()]
  if len(paragraphs) > 1:
    return paragraphs
  return [line.strip() for line in text.splitlines() if line.strip()]


def chunk_units(units: list[str], max_words: int = DEFAULT_MAX_WORDS,
                min_words: int = DEFAULT_MIN_WORDS,
                breaks: dict[int, str | None] | None = None) -> list[str]:
  """Greedily groups text units into chunks of at most `max_words` words.

  A chunk is closed before a unit that would push it past `max_words`, or at a preferred break
  (index in `breaks`) once it has `min_words`. Units longer than `max_words` are split into
  sentences first. A short last chunk (< min_words / 2) is merged into the previous one when the result
  still fits in `max_words`.

  Args:
    units: text units (paragraphs or sentence lines).
    max_words: upper bound on words per chunk (one longer sentence stays whole).
    min_words: lower bound used for preferred breaks and the last-chunk merge.
    breaks: unit index -> sub-section title (or None) where a new chunk may start.

  Returns:
    The chunk texts, units joined by newlines.
  """
  return [text for _, text in _chunk_with_titles(units, max_words, min_words, breaks or {})]


def _chunk_with_titles(units, max_words, min_words, breaks):
  expanded, expanded_breaks = [], {}
  for i, unit in enumerate(units):
    if i in breaks:
      expanded_breaks[len(expanded)] = breaks[i]
    if len(unit.split()) > max_words:
      expanded.extend(split_sentences(unit))
    else:
      expanded.append(unit)
  chunks: list[tuple[str | None, list[str], int]] = []
  current, words, subtitle = [], 0, expanded_breaks.get(0)
  for i, unit in enumerate(expanded):
    n = len(unit.split())
    at_break = i in expanded_breaks and words >= min_words
    if current and (words + n > max_words or at_break):
      chunks.append((subtitle, current, words))
      current, words = [], 0
      subtitle = expanded_breaks.get(i)
    current.append(unit)
    words += n
  if current:
    if chunks and words < min_words / 2 and chunks[-1][2] + words <= max_words:
      last = chunks.pop()
      chunks.append((last[0], last[1] + current, last[2] + words))
    else:
      chunks.append((subtitle, current, words))
  return [(t, '\n'.join(c)) for t, c, _ in chunks]


def segment_plain_text(text: str, max_words: int = DEFAULT_MAX_WORDS,
                       min_words: int = DEFAULT_MIN_WORDS
                       ) -> tuple[str, list[tuple[str, str]]]:
  """Segments plain text into titled sections (rules in the module docstring).

  Args:
    text: the document text.
    max_words: upper bound on words per section part.
    min_words: lower bound used when grouping.

  Returns:
    (document title or '', [(section title, section text), ...]) in reading order, with the
    References and other back matter removed.
  """
  lines = [line.strip() for line in text.splitlines()]
  title = ''
  if lines:
    for n in (1, 2, 3):
      doubled = _doubled_title(' '.join(lines[:n]))
      if doubled:
        title, lines[:n] = doubled[0], [''] * n
        break
    else:
      doubled = None
    if doubled:
      pass
    elif len(lines[0].split()) <= 20 and not lines[0].endswith('.') and len(lines) > 1:
      title, lines[0] = lines[0], ''
  sections: list[dict] = [{'title': None, 'units': [], 'breaks': {}}]
  seen_names: set[str] = set()
  skipping, pending_break = False, None

  def start(name: str) -> None:
    sections.append({'title': name, 'units': [], 'breaks': {}})

  for line in lines:
    if not line:
      if sections[-1]['units'] and not skipping:
        pending_break = pending_break or (None,)
      continue
    body = _BODY_RE.match(line)
    if body and _canonical(body.group('name')) not in seen_names:
      seen_names.add(_canonical(body.group('name')))
      start(_display_name(body.group('name')))
      skipping, pending_break = False, None
      line = line[body.end():].strip()
      if not line:
        continue
    elif _BACK_RE.match(line) or _ACK_SENTENCE_RE.match(line):
      skipping = True
      continue
    elif len(sections) == 1 and not skipping:
      midline = _MIDLINE_INTRO_RE.search(line)
      if midline and len(line[midline.end():].split()) >= 6 and _canonical(midline.group('name')) not in seen_names:
        sections[-1]['units'].append(line[:midline.start()].strip())
        seen_names.add(_canonical(midline.group('name')))
        start(midline.group('name'))
        line = line[midline.end():].strip()
    if skipping or _CAPTION_RE.match(line):
      continue
    if len(sections) == 1 and _AFFILIATION_RE.search(line) and len(line.split()) < 80:
      continue
    leading = _LEADING_LABEL_RE.match(line)
    if leading:
      line = line[leading.end():]
      pending_break = (None,)
    line, label, heading_only = split_trailing_label(line)
    section = sections[-1]
    if heading_only:
      pending_break = (line or None,)
      continue
    if pending_break is not None:
      section['breaks'][len(section['units'])] = pending_break[0] or glued_subtitle(line)
      pending_break = None
    if line:
      section['units'].append(line)
    if label:
      pending_break = (None,)
  return title, _titled_chunks(sections, max_words, min_words)


def _canonical(name: str) -> str:
  return ' '.join(name.lower().split())


def _display_name(name: str) -> str:
  name = ' '.join(name.split())
  return name[0].upper() + name[1:]


def _titled_chunks(sections, max_words, min_words) -> list[tuple[str, str]]:
  any_heading = len(sections) > 1
  if any_heading:
    first_heading = (sections[1]['title'] or '').lower()
    front_words = sum(len(u.split()) for u in sections[0]['units'])
    if first_heading in ('introduction', 'background'):
      front = 'Abstract'
    else:
      front = 'Abstract and introduction' if front_words <= 3 * max_words else 'Main text'
  else:
    front = 'Part'
  titled = []
  for section in sections:
    units = [u for u in section['units'] if u]
    if not units:
      continue
    chunks = _chunk_with_titles(units, max_words, min_words, section['breaks'])
    base = section['title'] or front
    if base == 'Part':
      titled.extend((f'Part {k + 1}', text) for k, (_, text) in enumerate(chunks))
    elif len(chunks) == 1:
      titled.append((base, chunks[0][1]))
    else:
      for k, (subtitle, text) in enumerate(chunks):
        titled.append((f'{base}: {subtitle}' if subtitle else f'{base} (part {k + 1})', text))
  return titled
