"""Document ingestion: Markdown, LaTeX, JATS XML and plain text -> `Document` of `Section`s.

Every reader returns a `Document` whose sections are in reading order (`order` = 0, 1, ...).
Back matter (References, Bibliography, Acknowledgements, ...) is dropped in every format, and
sections with no text are skipped. `load_corpus` walks a file or folder, reads every file with a
known extension, and reports broken files (empty, not UTF-8, bad XML, no sections) as per-file
problem messages instead of raising.
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
import xml.etree.ElementTree as ET
from typing import Iterable, Sequence

from penrose_jax.data import segment

FORMAT_EXTENSIONS = {
    'markdown': ('.md', '.markdown'),
    'latex': ('.tex',),
    'jats': ('.xml', '.nxml'),
    'text': ('.txt',),
}
ALL_FORMATS = tuple(FORMAT_EXTENSIONS)


@dataclasses.dataclass(frozen=True)
class Section:
  """One section of a document: the unit of section-wise Q&A fine-tuning."""
  doc_id: str
  order: int
  title: str
  text: str


@dataclasses.dataclass(frozen=True)
class Document:
  """A document split into sections in reading order."""
  doc_id: str
  title: str
  sections: tuple[Section, ...]
  source_path: str = ''


class DocumentError(ValueError):
  """Raised by the readers when a file cannot be turned into a `Document`."""


def make_document(doc_id: str, title: str, titled_texts: Iterable[tuple[str, str]],
                  source_path: str = '') -> Document:
  """Builds a `Document`, numbering sections and dropping empty and back-matter ones.

  Args:
    doc_id: document id (usually the file stem).
    title: document title.
    titled_texts: (section title, section text) pairs in reading order.
    source_path: where the document came from.

  Returns:
    The `Document`.
  """
  sections = []
  for title_i, text_i in titled_texts:
    text_i = _normalise_paragraphs(text_i)
    title_i = ' '.join(title_i.split())
    if not text_i or segment.is_back_matter_title(title_i):
      continue
    sections.append(Section(doc_id, len(sections), title_i, text_i))
  return Document(doc_id, ' '.join(title.split()), tuple(sections), source_path)


def _normalise_paragraphs(text: str) -> str:
  paragraphs = re.split(r'\n\s*\n', text.strip())
  return '\n\n'.join(' '.join(p.split()) for p in paragraphs if p.strip())


# ----------------------------------------------------------------------------------- Markdown

_MD_HEADING = re.compile(r'^(#{1,6})\s+(.*?)\s*#*\s*$')


def read_markdown(text: str, doc_id: str, source_path: str = '') -> Document:
  """Reads Markdown: the first `#` heading is the title, the other headings start sections.

  Text before the first section heading becomes a section titled 'Overview'. Headings inside
  fenced code blocks are ignored.

  Args:
    text: file contents.
    doc_id: document id.
    source_path: origin of the text.

  Returns:
    The `Document`.
  """
  title = ''
  parts: list[tuple[str, list[str]]] = [('Overview', [])]
  in_fence = False
  for line in text.splitlines():
    if line.lstrip().startswith('```'):
      in_fence = not in_fence
    match = None if in_fence else _MD_HEADING.match(line)
    if match and len(match.group(1)) == 1 and not title:
      title = match.group(2)
    elif match:
      parts.append((match.group(2), []))
    else:
      parts[-1][1].append(line)
  return make_document(doc_id, title or doc_id, [(t, '\n'.join(ls)) for t, ls in parts],
                       source_path)


# -------------------------------------------------------------------------------------- LaTeX

_LATEX_SECTION = re.compile(r'\\(section|subsection|subsubsection|paragraph)\*?\s*(?:\[[^\]]*\])?\s*{')


def _braced(text: str, start: int) -> tuple[str, int]:
  """Returns the contents of the brace group opening just before `start`, and its end index."""
  depth, i = 1, start
  while i < len(text) and depth:
    if text[i] == '\\':
      i += 2
      continue
    depth += {'{': 1, '}': -1}.get(text[i], 0)
    i += 1
  if depth:
    raise DocumentError(f'unbalanced braces after offset {start}')
  return text[start:i - 1], i


def _latex_to_text(text: str) -> str:
  text = re.sub(r'\\begin{(figure|table|equation|align|tabular)\*?}.*?\\end{\1\*?}', ' ', text,
                flags=re.S)
  text = re.sub(r'\\(cite|citep|citet|ref|eqref|label)\*?(\[[^\]]*\])?{[^}]*}', '', text)
  for _ in range(3):  # unwrap nested formatting commands
    text = re.sub(r'\\(emph|textbf|textit|texttt|textrm|mathrm|text|underline){([^{}]*)}',
                  r'\2', text)
  text = re.sub(r'\\(begin|end){[^}]*}', '', text)
  text = re.sub(r'\\(item|noindent|centering|maketitle|par)\b', ' ', text)
  text = text.replace('~', ' ').replace('\\%', '%').replace('--', '–')
  return text


def read_latex(text: str, doc_id: str, source_path: str = '') -> Document:
  """Reads LaTeX: `\\title`, the `abstract` environment, and `\\(sub)*section` commands.

  Comments are stripped; figures, tables, equations, citations and labels are removed; simple
  formatting commands are unwrapped. Sub-sections become sections of their own.

  Args:
    text: file contents.
    doc_id: document id.
    source_path: origin of the text.

  Returns:
    The `Document`.
  """
  text = re.sub(r'(?<!\\)%.*', '', text)
  title = doc_id
  match = re.search(r'\\title\s*{', text)
  if match:
    title = _latex_to_text(_braced(text, match.end())[0])
  body_start = text.find('\\begin{document}')
  body = text[body_start + len('\\begin{document}'):] if body_start >= 0 else text
  body = body.split('\\end{document}')[0]
  body = re.split(r'\\(bibliography|begin{thebibliography}|appendix)\b', body)[0]
  parts = []
  abstract = re.search(r'\\begin{abstract}(.*?)\\end{abstract}', body, flags=re.S)
  if abstract:
    parts.append(('Abstract', abstract.group(1)))
    body = body[:abstract.start()] + body[abstract.end():]
  heads = []
  for m in _LATEX_SECTION.finditer(body):
    head, end = _braced(body, m.end())
    heads.append((m.start(), end, _latex_to_text(head)))
  if heads:
    preamble = body[:heads[0][0]]
    preamble = preamble.split('\\maketitle')[-1] if '\\maketitle' in preamble else ''
    parts.append(('Overview', preamble))
  else:
    parts.append(('Overview', body))
  for i, (_, end, head) in enumerate(heads):
    stop = heads[i + 1][0] if i + 1 < len(heads) else len(body)
    parts.append((head, body[end:stop]))
  return make_document(doc_id, title, [(t, _latex_to_text(s)) for t, s in parts], source_path)


# --------------------------------------------------------------------------------------- JATS

_JATS_SKIP = {'sec', 'title', 'label', 'fig', 'table-wrap', 'ref-list', 'fn-group', 'ack',
              'disp-formula', 'supplementary-material'}


def _local(tag) -> str:
  return tag.split('}')[-1] if isinstance(tag, str) else ''


def _element_text(elem: ET.Element) -> str:
  """Text of `elem`'s block children (paragraphs), skipping nested sections, titles, figures."""
  chunks = []
  if elem.text and elem.text.strip():
    chunks.append(elem.text.strip())
  for child in elem:
    if _local(child.tag) not in _JATS_SKIP:
      chunks.append(' '.join(''.join(child.itertext()).split()))
    if child.tail and child.tail.strip():
      chunks.append(child.tail.strip())
  return '\n\n'.join(c for c in chunks if c)


def _flatten_secs(sec: ET.Element, out: list[tuple[str, str]]) -> None:
  title_elem = next((c for c in sec if _local(c.tag) == 'title'), None)
  title = ' '.join(''.join(title_elem.itertext()).split()) if title_elem is not None else ''
  out.append((title or 'Untitled section', _element_text(sec)))
  for child in sec:
    if _local(child.tag) == 'sec':
      _flatten_secs(child, out)


def read_jats(text: str, doc_id: str, source_path: str = '') -> Document:
  """Reads JATS XML: article title, `<abstract>` as its own section, body `<sec>`s flattened.

  Nested `<sec>` elements become sections in reading order (a parent's own paragraphs come
  before its children). `<back>` (references, acknowledgements) is ignored.

  Args:
    text: file contents.
    doc_id: document id.
    source_path: origin of the text.

  Returns:
    The `Document`.

  Raises:
    DocumentError: on malformed XML or when the root is not `<article>`.
  """
  try:
    root = ET.fromstring(text)
  except ET.ParseError as e:
    raise DocumentError(f'XML parse error: {e}') from None
  if _local(root.tag) != 'article':
    raise DocumentError(f'root element is <{_local(root.tag)}>, expected <article>')
  title = doc_id
  parts: list[tuple[str, str]] = []
  for elem in root.iter():
    tag = _local(elem.tag)
    if tag == 'article-title' and title == doc_id:
      title = ' '.join(''.join(elem.itertext()).split())
    elif tag == 'abstract' and not parts:
      abstract = '\n\n'.join(_element_text(e) for e in [elem] + [c for c in elem.iter()
                                                                 if _local(c.tag) == 'sec'])
      parts.append(('Abstract', abstract))
  body = next((e for e in root if _local(e.tag) == 'body'), None)
  if body is not None:
    intro = _element_text(body)
    if intro:
      parts.append(('Overview', intro))
    for child in body:
      if _local(child.tag) == 'sec':
        _flatten_secs(child, parts)
  return make_document(doc_id, title, parts, source_path)


# --------------------------------------------------------------------------------- plain text

def read_plain_text(text: str, doc_id: str, source_path: str = '',
                    max_section_words: int = 400, min_section_words: int = 150) -> Document:
  """Reads plain text and segments it with `segment.segment_plain_text` (headings or length).

  Args:
    text: file contents.
    doc_id: document id.
    source_path: origin of the text.
    max_section_words: long sections are split into parts of at most about this many words.
    min_section_words: parts are at least this long where the text allows.

  Returns:
    The `Document`.
  """
  title, titled = segment.segment_plain_text(
      text, max_words=max_section_words, min_words=min_section_words)
  return make_document(doc_id, title or doc_id, titled, source_path)


_READERS = {'markdown': read_markdown, 'latex': read_latex, 'jats': read_jats,
            'text': read_plain_text}


def detect_format(path: pathlib.Path) -> str | None:
  """Returns the format name for a file extension, or None when it is not a known one."""
  suffix = path.suffix.lower()
  for name, extensions in FORMAT_EXTENSIONS.items():
    if suffix in extensions:
      return name
  return None


def load_document(path: str | pathlib.Path, fmt: str | None = None) -> Document:
  """Reads one file into a `Document`.

  Args:
    path: file path; the doc_id is the file stem.
    fmt: one of ALL_FORMATS, or None to detect it from the extension.

  Returns:
    The `Document`.

  Raises:
    DocumentError: empty file, invalid UTF-8, unknown format, parse errors, no sections.
  """
  path = pathlib.Path(path)
  fmt = fmt or detect_format(path)
  if fmt not in _READERS:
    raise DocumentError(f'unknown format for extension {path.suffix!r}')
  raw = path.read_bytes()
  if not raw.strip():
    raise DocumentError('empty file')
  try:
    text = raw.decode('utf-8-sig')
  except UnicodeDecodeError as e:
    raise DocumentError(f'not valid UTF-8 (byte 0x{raw[e.start]:02x} at offset {e.start})'
                        ) from None
  document = _READERS[fmt](text, path.stem, str(path))
  if not document.sections:
    raise DocumentError('no sections with text found')
  return document


def load_corpus(path: str | pathlib.Path, formats: str | Sequence[str] = 'auto',
                max_section_words: int | None = None
                ) -> tuple[list[Document], list[str]]:
  """Loads every readable document under a file or folder (recursively, sorted by path).

  Files whose extension belongs to no requested format are ignored silently (e.g. JSONL files
  beside the documents). Broken files are skipped and reported; the corpus keeps loading.

  Args:
    path: a file or a folder.
    formats: 'auto' (all of ALL_FORMATS) or a sequence of format names to accept.
    max_section_words: if set, sections longer than this are split into parts in every format
      (plain text is always segmented to `segment.DEFAULT_MAX_WORDS`).

  Returns:
    (documents, problems): documents in path order; problems as 'FILE: reason' strings.

  Raises:
    FileNotFoundError: when `path` does not exist.
    ValueError: for an unknown format name.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise FileNotFoundError(path)
  wanted = ALL_FORMATS if formats == 'auto' else tuple([formats] if isinstance(formats, str)
                                                       else formats)
  unknown = set(wanted) - set(ALL_FORMATS)
  if unknown:
    raise ValueError(f'unknown formats {sorted(unknown)}; known: {ALL_FORMATS}')
  files = [path] if path.is_file() else sorted(p for p in path.rglob('*') if p.is_file())
  documents, problems, seen = [], [], {}
  for file in files:
    fmt = detect_format(file)
    if fmt not in wanted:
      continue
    try:
      document = load_document(file, fmt)
    except (DocumentError, OSError) as e:
      problems.append(f'{file.name}: {e}')
      continue
    if document.doc_id in seen:
      problems.append(f'{file.name}: duplicate doc_id {document.doc_id!r} '
                      f'(already read from {seen[document.doc_id]}); skipped')
      continue
    seen[document.doc_id] = file.name
    if max_section_words:
      document = split_long_sections(document, max_section_words)
    documents.append(document)
  return documents, problems


def split_long_sections(document: Document, max_words: int) -> Document:
  """Splits sections longer than `max_words` into '(part k)' sections at paragraph/sentence ends.

  Args:
    document: the document.
    max_words: upper bound on words per section (a single longer sentence stays whole).

  Returns:
    A new `Document` with renumbered sections.
  """
  titled = []
  for section in document.sections:
    chunks = segment.chunk_units(segment.text_units(section.text), max_words,
                                 min_words=max_words // 3)
    if len(chunks) == 1:
      titled.append((section.title, section.text))
    else:
      titled.extend((f'{section.title} (part {k + 1})', c) for k, c in enumerate(chunks))
  return make_document(document.doc_id, document.title, titled, document.source_path)
