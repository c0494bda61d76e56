"""Support filter and de-duplication for generated Q&A pairs (pure functions).

Support rule (`answer_supported`): after normalisation (NFKC, lower case, unicode minus/dashes
to '-', thousands separators removed, light plural stripping), an answer is supported by a
section when
  1. it has at least one content token (a token not in `STOPWORDS`),
  2. at least `min_token_fraction` (default 0.6) of its content tokens occur in the section, and
  3. every number in the answer occurs as a number in the section.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Iterable, Sequence

from penrose_jax.qa.records import QAPair

STOPWORDS = frozenset(
    'a an the of to in on at by for with and or is are was were be been being as that this these '
    'those it its from into than then which who whom what when where why how not no yes do does '
    'did has have had can could may might will would should shall about approximately around '
    'also very more most less least such so there their they he she we our you your i '
    'answer approx ca'.split())
_NUMBER_RE = re.compile(r'\d+(?:\.\d+)?')


def normalise_text(text: str) -> str:
  """NFKC, lower case, dashes/minus to '-', '1,037' -> '1037', whitespace collapsed."""
  text = unicodedata.normalize('NFKC', text).lower()
  text = re.sub(r'[−–—‐‑]', '-', text)
  text = re.sub(r'(?<=\d),(?=\d{3}\b)', '', text)
  return ' '.join(text.split())


def _stem(token: str) -> str:
  if len(token) > 4 and token.endswith('ies'):
    return token[:-3] + 'y'
  if len(token) > 3 and token.endswith('es') and token[-3] in 'sxz':
    return token[:-2]
  if len(token) > 3 and token.endswith('s') and not token.endswith('ss'):
    return token[:-1]
  return token


def content_tokens(text: str) -> list[str]:
  """Normalised, stemmed tokens of `text` that are not stopwords (numbers kept)."""
  tokens = re.findall(r'\d+(?:\.\d+)?|[^\W_]+', normalise_text(text))
  return [_canonical_number(t) if t[0].isdigit() else _stem(t) for t in tokens
          if t not in STOPWORDS]


def _canonical_number(number: str) -> str:
  if '.' in number:
    return number.rstrip('0').rstrip('.')
  return number.lstrip('0') or '0'


def numbers_in(text: str) -> set[str]:
  """Numbers in `text` after normalisation, without trailing zeros ('1.50' -> '1.5')."""
  out = set()
  for number in _NUMBER_RE.findall(normalise_text(text)):
    out.add(_canonical_number(number))
  return out


def answer_supported(answer: str, section_text: str, min_token_fraction: float = 0.6) -> bool:
  """Whether a (model-generated) answer is supported by the section text (module docstring).

  Args:
    answer: the answer.
    section_text: the section it should come from.
    min_token_fraction: required fraction of the answer's content tokens found in the section.

  Returns:
    True when the answer passes all three checks.
  """
  tokens = content_tokens(answer)
  if not tokens:
    return False
  section_tokens = set(content_tokens(section_text))
  found = sum(t in section_tokens for t in tokens)
  if found < min_token_fraction * len(tokens):
    return False
  return numbers_in(answer) <= numbers_in(section_text)


def question_key(question: str) -> str:
  """Normalised question text used for de-duplication (punctuation and case ignored)."""
  return ' '.join(re.findall(r'[^\W_]+', normalise_text(question)))


def dedupe_qa(pairs: Iterable[QAPair]) -> list[QAPair]:
  """Drops pairs whose (doc_id, normalised question) was seen before; keeps the first, in order.

  Args:
    pairs: Q&A pairs.

  Returns:
    The de-duplicated pairs.
  """
  seen: set[tuple[str, str]] = set()
  out = []
  for pair in pairs:
    key = (pair.doc_id, question_key(pair.question))
    if key not in seen:
      seen.add(key)
      out.append(pair)
  return out


def filter_supported(pairs: Sequence[QAPair], section_texts: dict[tuple[str, int], str],
                     min_token_fraction: float = 0.6) -> tuple[list[QAPair], list[QAPair]]:
  """Splits pairs into (supported, rejected) by `answer_supported` against their section.

  Args:
    pairs: Q&A pairs.
    section_texts: (doc_id, section_order) -> section text; pairs whose section is missing are
      rejected.
    min_token_fraction: see `answer_supported`.

  Returns:
    (supported, rejected), each in input order.
  """
  kept, rejected = [], []
  for pair in pairs:
    text = section_texts.get((pair.doc_id, pair.section_order))
    ok = text is not None and answer_supported(pair.answer, text, min_token_fraction)
    (kept if ok else rejected).append(pair)
  return kept, rejected
