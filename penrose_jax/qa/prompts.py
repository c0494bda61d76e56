"""Chat prompts for model-generated Q&A and a tolerant parser of the model's replies.

Reply format asked for:
    Q: <question>
    A: <answer>
    Reasoning: <one to three sentences citing the section>
The parser also accepts numbering ('1.', 'Q1:'), Markdown bold ('**Q:**'), and the long labels
'Question:', 'Answer:', 'Explanation:' / 'Rationale:'; values may span several lines. Blocks
without a question or an answer are dropped; a missing reasoning becomes ''.
"""

from __future__ import annotations

import re

from penrose_jax.data.ingest import Section

SYSTEM_PROMPT = (
    'You write study questions about scientific text. Every answer must be stated in the given '
    'section; do not use outside knowledge. Copy numbers and units exactly.')

_LABEL_RE = re.compile(
    r'^\s*(?:[-*]\s*)?(?:\d+[.)]\s*)?(?:\*\*|__)?\s*'
    r'(?P<label>Q(?:uestion)?\s*\d*|A(?:nswer)?\s*\d*|Reasoning|Explanation|Rationale)'
    r'\s*(?:\*\*|__)?\s*[:：]\s*(?:\*\*|__)?\s*(?P<rest>.*)$', re.I)


def build_qa_generation_prompt(section: Section, num_questions: int = 5,
                               doc_title: str = '') -> list[dict[str, str]]:
  """Chat messages asking a model for Q&A pairs with reasoning about one section.

  Args:
    section: the section.
    num_questions: how many pairs to ask for.
    doc_title: optional document title for context.

  Returns:
    [{'role': 'system', ...}, {'role': 'user', ...}] for `tokenizer.apply_chat_template`.
  """
  title_line = f'Document: {doc_title}\n' if doc_title else ''
  user = (
      f'{title_line}Section: {section.title}\n\n{section.text}\n\n'
      f'Write {num_questions} question-answer pairs about this section. Each answer must be '
      'short and supported by the section text. After each answer give one to three sentences '
      f'of reasoning that cite the section, starting with "The {section.title} section states '
      'that". Use exactly this format and nothing else:\n'
      'Q: <question>\nA: <answer>\nReasoning: <reasoning>\n\n'
      'Separate pairs with a blank line.')
  return [{'role': 'system', 'content': SYSTEM_PROMPT}, {'role': 'user', 'content': user}]


def _kind(label: str) -> str:
  label = label.lower()
  if label.startswith('q'):
    return 'q'
  if label.startswith('a'):
    return 'a'
  return 'r'


def parse_generated_qa(text: str) -> list[tuple[str, str, str]]:
  """Parses 'Q: / A: / Reasoning:' blocks from generated text.

  Args:
    text: the model's reply.

  Returns:
    (question, answer, reasoning) tuples in order; whitespace-normalised.
  """
  pairs: list[tuple[str, str, str]] = []
  current: dict[str, list[str]] = {}
  field = None

  def flush() -> None:
    q = ' '.join(' '.join(current.get('q', [])).split())
    a = ' '.join(' '.join(current.get('a', [])).split())
    r = ' '.join(' '.join(current.get('r', [])).split())
    if q and a:
      pairs.append((q, a, r))

  for line in text.splitlines():
    match = _LABEL_RE.match(line)
    if match:
      kind = _kind(match.group('label'))
      if kind == 'q' and current:
        flush()
        current = {}
      field = kind
      current.setdefault(kind, []).append(match.group('rest').strip().strip('*_').strip())
    elif field and line.strip():
      current.setdefault(field, []).append(line.strip())
  if current:
    flush()
  return pairs
