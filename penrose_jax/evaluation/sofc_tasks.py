"""SOFC-Exp extraction tasks for a chat decoder: prompts, answer parsers and span-level scores.

Three tasks, each one user turn of the model's chat template (the same single-turn shape
`models.chat_format.qa_messages` trains, so the `sofc_tasks` Q&A source teaches exactly these
prompts):

  * detection: "Does this sentence describe an SOFC experiment? Answer yes or no."; scored by the
    log-likelihood of the assistant answers 'yes' / 'no' (accuracy; precision / recall / F1 of
    'yes').
  * entities (experiment sentences: the corpus annotates mentions only there): the model answers
    one line per type, e.g.
        MATERIAL: Ni-YSZ; GDC
        VALUE: 800 °C
        DEVICE: none
        EXPERIMENT: tested
  * slots (experiment sentences): one line per stated slot, 'working_temperature: 800 °C',
    or 'none'.

Message layout: [k solved train-split examples,] the sentence, the instruction; one user turn.

Parsing (`parse_labelled_lines`, deterministic): a line 'LABEL: a; b' (optional '-', '*' or
'**' decoration, label case-insensitive, spaces = underscores) contributes its ';'-separated
values to LABEL when LABEL is one the task asks for; other lines are ignored; values are
stripped of whitespace and surrounding quotes, 'none' / 'n/a' / '-' are dropped, repeats are
dropped. Each value is then located in the sentence (`locate`): every non-overlapping exact
occurrence becomes a predicted span (a model lists a string once, the annotation marks each
occurrence); when there is none, case-insensitive occurrences; when still none, the value is one
unlocated prediction (a false positive under both match rules).

Scores (`span_scores`): exact match = same label, start and end; overlap match = same label and
at least one shared character, one-to-one (predictions in order take the first unmatched
overlapping gold span). P = matched / predicted, R = matched / gold, F1 = 2PR / (P + R), each 0
when its denominator is 0; per label and micro-averaged (counts summed over labels).
"""

from __future__ import annotations

import re
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from penrose_jax.evaluation.sofc_annotations import ENTITY_TYPES, SLOT_TYPES, Mention, Sentence

TASKS = ("detection", "entities", "slots")
_INTRO = "Sentence from a materials-science article on solid oxide fuel cells (SOFC):\n"
INSTRUCTIONS = {
    "detection": (
        "Does the sentence describe an SOFC experiment, that is a cell, electrode or material "
        "that was made or tested, with its conditions or measured results? Answer yes or no."),
    "entities": (
        "List the entity mentions of the sentence, copied exactly, one line per type:\n"
        "MATERIAL: <mentions separated by ;>\nVALUE: <mentions>\nDEVICE: <mentions>\n"
        "EXPERIMENT: <mentions>\n"
        "MATERIAL = chemical formulas or material names; VALUE = numbers with their units; "
        "DEVICE = fuel cells and cell parts; EXPERIMENT = the words naming the experiment. "
        "Write none for a type without mentions."),
    "slots": (
        "The sentence describes an experiment. Fill the slots it states, copied exactly, one "
        "line per slot as 'slot: value; value'. Slots: " + ", ".join(SLOT_TYPES) + ". "
        "Leave out slots the sentence does not state; answer none if it states none."),
}
_NONE_VALUES = {"", "none", "n/a", "na", "-", "null", "nothing"}
_LINE_RE = re.compile(r"^\s*(?:[-*]\s*)?(?:\*\*|__)?\s*(?P<label>[A-Za-z][A-Za-z_ ]*?)\s*"
                      r"(?:\*\*|__)?\s*[:：]\s*(?:\*\*|__)?(?P<rest>.*)$")


def task_labels(task: str) -> tuple[str, ...]:
  """The labels a task asks for ('entities': ENTITY_TYPES, 'slots': SLOT_TYPES)."""
  if task == "entities":
    return ENTITY_TYPES
  if task == "slots":
    return SLOT_TYPES
  raise ValueError(f"task {task!r} has no labels; expected 'entities' or 'slots'")


def gold_mentions(sentence: Sentence, task: str) -> tuple[Mention, ...]:
  """The annotated mentions of a sentence for 'entities' or 'slots'."""
  return sentence.entities if task == "entities" else sentence.slots


def gold_answer(sentence: Sentence, task: str) -> str:
  """The answer text the model should give (training targets and k-shot examples).

  Args:
    sentence: an annotated sentence.
    task: one of TASKS.

  Returns:
    'yes' / 'no' for detection; the labelled lines for entities (every type, 'none' when
    empty) and slots (stated slots in order of first mention, or 'none').
  """
  if task == "detection":
    return "yes" if sentence.is_experiment else "no"
  values: dict[str, list[str]] = {}
  for mention in gold_mentions(sentence, task):
    texts = values.setdefault(mention.label, [])
    if mention.text not in texts:
      texts.append(mention.text)
  if task == "entities":
    return "\n".join(f"{label}: {'; '.join(values.get(label, [])) or 'none'}"
                     for label in ENTITY_TYPES)
  task_labels(task)
  lines = [f"{label}: {'; '.join(texts)}" for label, texts in values.items()
           if label in SLOT_TYPES]
  return "\n".join(lines) if lines else "none"


def build_prompt(sentence_text: str, task: str, examples: Sequence[Sentence] = ()) -> str:
  """The user message of one task query (zero-shot without examples, k-shot with them).

  Args:
    sentence_text: the sentence to answer about.
    task: one of TASKS.
    examples: solved sentences (train split) shown before the query.

  Returns:
    The user message text; send it as [{'role': 'user', 'content': ...}] through the chat
    template.
  """
  if task not in TASKS:
    raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
  parts = []
  if examples:
    shown = "\n\n".join(f"Sentence: {ex.text}\nAnswer:\n{gold_answer(ex, task)}"
                        for ex in examples)
    parts.append(f"Solved examples of the task below:\n\n{shown}")
  # The instruction comes last: it is next to the answer, and a prompt cut from the left to fit
  # a context (train_data.encode_qa_example, extraction._fit) loses examples first, not it.
  parts += [f"{_INTRO}{sentence_text}", INSTRUCTIONS[task]]
  return "\n\n".join(parts)


def chat_prompt(tokenizer: Any, user_message: str) -> str:
  """The chat-template prompt (user turn + generation prompt) of a user message.

  A tokenizer without a chat template (a base model) gets '<message>\n\nAnswer:\n' instead, so
  the evaluation still runs; such scores are not comparable with chat-template ones.

  Args:
    tokenizer: a TextTokenizer.
    user_message: from `build_prompt`.

  Returns:
    The prompt text.
  """
  if not getattr(tokenizer, "chat_template", None):
    return f"{user_message}\n\nAnswer:\n"
  return tokenizer.apply_chat_template([{"role": "user", "content": user_message}],
                                       add_generation_prompt=True)


def parse_labelled_lines(text: str, labels: Sequence[str]) -> dict[str, list[str]]:
  """Parses 'LABEL: a; b' lines of a model answer (see the module docstring).

  Args:
    text: the model's reply.
    labels: the labels to keep (matched case-insensitively, spaces as underscores).

  Returns:
    {label: values in order of appearance, without repeats}; labels without values are absent.
  """
  wanted = {label.lower(): label for label in labels}
  out: dict[str, list[str]] = {}
  for line in text.splitlines():
    match = _LINE_RE.match(line)
    if not match:
      continue
    key = re.sub(r"\s+", "_", match.group("label").strip()).lower()
    if key not in wanted:
      continue
    label = wanted[key]
    for raw in match.group("rest").split(";"):
      value = raw.strip().strip("*_").strip().strip("\"'`").strip()
      if value.lower().rstrip(".") in _NONE_VALUES:
        continue
      values = out.setdefault(label, [])
      if value not in values:
        values.append(value)
  return out


def locate(sentence_text: str, value: str) -> list[tuple[int, int]]:
  """Non-overlapping occurrences of `value` in the sentence: exact, else case-insensitive.

  Args:
    sentence_text: the sentence.
    value: a predicted mention.

  Returns:
    (start, end) pairs, left to right ([] when the value does not occur).
  """
  for haystack, needle in ((sentence_text, value), (sentence_text.lower(), value.lower())):
    spans, start = [], haystack.find(needle) if needle else -1
    while start >= 0:
      spans.append((start, start + len(needle)))
      start = haystack.find(needle, start + len(needle))
    if spans:
      return spans
  return []


def predicted_spans(sentence_text: str, parsed: dict[str, list[str]]
                    ) -> list[tuple[str, Optional[int], Optional[int]]]:
  """Spans of parsed values: located occurrences, or (label, None, None) when not found.

  Args:
    sentence_text: the sentence.
    parsed: from `parse_labelled_lines`.

  Returns:
    (label, start, end) triples without repeats, in label then value order.
  """
  out: list[tuple[str, Optional[int], Optional[int]]] = []
  for label, values in parsed.items():
    for value in values:
      spans = locate(sentence_text, value)
      for start, end in spans or [(None, None)]:
        if (label, start, end) not in out or start is None:
          out.append((label, start, end))
  return out


def prf(matched: int, predicted: int, gold: int) -> dict[str, float]:
  """Precision, recall and F1 (each 0 when its denominator is 0) and the counts."""
  p = matched / predicted if predicted else 0.0
  r = matched / gold if gold else 0.0
  f1 = 2 * p * r / (p + r) if p + r else 0.0
  return {"precision": p, "recall": r, "f1": f1, "matched": matched, "predicted": predicted,
          "gold": gold}


def _matches(gold: Sequence[Mention], pred: Sequence[tuple], overlap: bool) -> list[int]:
  """Indices into `pred` that match a gold span (one-to-one)."""
  used: set[int] = set()
  hits = []
  for index, (label, start, end) in enumerate(pred):
    if start is None:
      continue
    for g, mention in enumerate(gold):
      if g in used or mention.label != label:
        continue
      same = (mention.start, mention.end) == (start, end)
      if same or (overlap and start < mention.end and mention.start < end):
        used.add(g)
        hits.append(index)
        break
  return hits


def span_scores(gold: Sequence[Sequence[Mention]], pred: Sequence[Sequence[tuple]],
                labels: Sequence[str]) -> dict[str, Any]:
  """Span-level P/R/F1 by exact and by overlap match, per label and micro-averaged.

  Args:
    gold: per sentence, the annotated mentions.
    pred: per sentence, (label, start, end) triples from `predicted_spans`.
    labels: the labels scored (others are ignored on both sides).

  Returns:
    {'exact': {'micro': prf, 'per_label': {label: prf}}, 'overlap': {...}}.
  """
  if len(gold) != len(pred):
    raise ValueError(f"span_scores: {len(gold)} gold sentences but {len(pred)} predictions")
  out: dict[str, Any] = {}
  for rule in ("exact", "overlap"):
    counts = {label: [0, 0, 0] for label in labels}  # matched, predicted, gold
    for gold_s, pred_s in zip(gold, pred):
      gold_s = [m for m in gold_s if m.label in counts]
      pred_s = [p for p in pred_s if p[0] in counts]
      for index in _matches(gold_s, pred_s, overlap=rule == "overlap"):
        counts[pred_s[index][0]][0] += 1
      for p in pred_s:
        counts[p[0]][1] += 1
      for m in gold_s:
        counts[m.label][2] += 1
    total = np.sum([c for c in counts.values()], axis=0) if counts else np.zeros(3, int)
    out[rule] = {"micro": prf(*[int(x) for x in total]),
                 "per_label": {label: prf(*c) for label, c in counts.items()}}
  return out


def detection_scores(gold: Sequence[bool], pred: Sequence[bool]) -> dict[str, float]:
  """Accuracy and precision / recall / F1 of the positive ('yes' = experiment) class.

  Args:
    gold: annotated flags.
    pred: predicted flags.

  Returns:
    {'accuracy', 'precision', 'recall', 'f1', 'matched', 'predicted', 'gold', 'sentences'}.
  """
  gold, pred = list(map(bool, gold)), list(map(bool, pred))
  if len(gold) != len(pred):
    raise ValueError(f"detection_scores: {len(gold)} gold flags but {len(pred)} predictions")
  hits = sum(g and p for g, p in zip(gold, pred))
  out = prf(hits, sum(pred), sum(gold))
  out["accuracy"] = (sum(g == p for g, p in zip(gold, pred)) / len(gold)) if gold else 0.0
  out["sentences"] = len(gold)
  return out


def pick_examples(pool: Sequence[Sentence], task: str, k: int, seed: int,
                  max_chars: int = 300) -> list[Sentence]:
  """k solved examples for a k-shot prompt, drawn with a seeded generator.

  Detection alternates experiment / other sentences (starting with an experiment one);
  entities and slots draw experiment sentences that carry at least one mention. Sentences
  longer than max_chars are skipped to keep prompts short.

  Args:
    pool: sentences of the train split.
    task: one of TASKS.
    k: number of examples (0 = none).
    seed: generator seed.
    max_chars: longest sentence shown.

  Returns:
    The examples (fewer when the pool runs short).
  """
  if k <= 0:
    return []
  rng = np.random.default_rng([seed, TASKS.index(task)])
  short = [s for s in pool if len(s.text) <= max_chars]
  if task == "detection":
    groups = [[s for s in short if s.is_experiment], [s for s in short if not s.is_experiment]]
  else:
    groups = [[s for s in short if s.is_experiment and gold_mentions(s, task)]]
  orders = [list(rng.permutation(len(g))) for g in groups]
  out: list[Sentence] = []
  for i in range(k):
    group, order = groups[i % len(groups)], orders[i % len(groups)]
    if order:
      out.append(group[order.pop(0)])
  return out


def task_sentences(sentences: Iterable[Sentence], task: str) -> list[Sentence]:
  """The sentences a task is asked on: all for detection, experiment sentences otherwise."""
  return [s for s in sentences if task == "detection" or s.is_experiment]
