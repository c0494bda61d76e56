"""BIO tagging of SOFC-Exp sentences: labels, word -> subword alignment, Viterbi, spans, scores.

The tagging route of the SOFC-Exp tasks (Friedrich et al., ACL 2020): each annotation word token
gets a BIO tag for the 4 entity types and, separately, for the slot types; a tagger predicts the
tag of a word at its first subword (the other subwords are not scored), decoding is a Viterbi
search that only allows I-X after B-X or I-X, and scoring is exact-span micro and macro F1
(conlleval). Per the protocol, `experiment_evoking_word` and `interconnect_material` are O in the
slot task. Pure functions: no files, no model.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Sequence

import numpy as np

from penrose_jax.evaluation import sofc_tasks
from penrose_jax.evaluation.sofc_annotations import ENTITY_TYPES, SLOT_TYPES, Mention, Sentence

# Slot types the protocol maps to O (the evoking word is the EXPERIMENT entity; interconnect
# material is too rare to score).
PROTOCOL_O_SLOTS = ("experiment_evoking_word", "interconnect_material")
SLOT_TAG_TYPES = tuple(s for s in SLOT_TYPES if s not in PROTOCOL_O_SLOTS)
IGNORE = -1  # target of subwords that are not scored (continuations, padding, BOS)


@dataclasses.dataclass(frozen=True)
class BioLabels:
  """A BIO tag vocabulary: 'O' = 0, then B-<type>, I-<type> for each type in order.

  Attributes:
    types: the span types.
    tags: tag strings, index = tag id.
  """

  types: tuple[str, ...]
  tags: tuple[str, ...]

  @property
  def size(self) -> int:
    return len(self.tags)

  def index(self, tag: str) -> int:
    """Tag id of a tag string (ValueError naming the vocabulary when unknown)."""
    try:
      return self.tags.index(tag)
    except ValueError:
      raise ValueError(f"tag {tag!r} is not in the BIO vocabulary {self.tags}") from None


def bio_labels(types: Sequence[str]) -> BioLabels:
  """Builds the BIO vocabulary of a list of span types.

  Args:
    types: distinct span types.

  Returns:
    BioLabels with 1 + 2 * len(types) tags.
  """
  types = tuple(types)
  if len(set(types)) != len(types) or not types:
    raise ValueError(f"bio_labels: types must be distinct and non-empty, got {types}")
  tags = ("O",) + tuple(f"{p}-{t}" for t in types for p in ("B", "I"))
  return BioLabels(types, tags)


ENTITY_LABELS = bio_labels(ENTITY_TYPES)
SLOT_LABELS = bio_labels(SLOT_TAG_TYPES)


def word_tags(sentence: Sentence, mentions: Sequence[Mention], labels: BioLabels) -> list[int]:
  """Tag ids of the sentence's annotation words from its mentions.

  A word inside a mention gets B- (the mention's first word) or I-; mentions whose label is not
  in `labels` (protocol-O slots) leave their words O.

  Args:
    sentence: a sentence with `words` (experiment sentences).
    mentions: its entities or slots.
    labels: the vocabulary.

  Returns:
    One tag id per word.
  """
  out = [0] * len(sentence.words)
  for m in mentions:
    if m.label not in labels.types:
      continue
    inside = [i for i, (b, e) in enumerate(sentence.words) if b >= m.start and e <= m.end]
    for rank, i in enumerate(inside):
      out[i] = labels.index(("B-" if rank == 0 else "I-") + m.label)
  return out


def align_words(text: str, words: Sequence[tuple[int, int]], encode: Callable[[str], list[int]]
                ) -> tuple[list[int], list[int]]:
  """Tokenizes a sentence word by word, so every word starts a new subword.

  Each word is encoded together with the whitespace before it (as a BPE tokenizer sees it in
  running text), so word boundaries are subword boundaries by construction.

  Args:
    text: the sentence.
    words: (start, end) character offsets of its words, in order, not overlapping.
    encode: text -> token ids (no BOS).

  Returns:
    (token ids, index of each word's first subword in the token ids).

  Raises:
    ValueError: words out of order / outside the text, or a word that encodes to no token.
  """
  ids: list[int] = []
  first: list[int] = []
  cursor = 0
  for start, end in words:
    if not cursor <= start < end <= len(text):
      raise ValueError(f"align_words: word {start}..{end} is out of order or outside the "
                       f"sentence ({len(text)} characters, previous word ended at {cursor})")
    piece = encode(text[cursor:end])
    if not piece:
      raise ValueError(f"align_words: word {text[start:end]!r} encodes to no token")
    first.append(len(ids))
    ids.extend(piece)
    cursor = end
  return ids, first


def token_targets(num_tokens: int, first_subword: Sequence[int], tags: Sequence[int],
                  offset: int = 0) -> np.ndarray:
  """Per-token targets: a word's tag at its first subword, IGNORE elsewhere.

  Args:
    num_tokens: sequence length (padding included).
    first_subword: first subword index of each word (from `align_words`).
    tags: tag id of each word.
    offset: tokens before the sentence (e.g. 1 for a BOS).

  Returns:
    (num_tokens,) int32.
  """
  out = np.full(num_tokens, IGNORE, np.int32)
  for index, tag in zip(first_subword, tags):
    if offset + index < num_tokens:
      out[offset + index] = tag
  return out


def transition_mask(labels: BioLabels) -> tuple[np.ndarray, np.ndarray]:
  """Allowed BIO transitions: I-X only after B-X or I-X (and never first).

  Args:
    labels: the vocabulary.

  Returns:
    (allowed[previous, next] (L, L) bool, allowed_first (L,) bool).
  """
  size = labels.size
  allowed = np.ones((size, size), bool)
  first = np.ones(size, bool)
  for j, tag in enumerate(labels.tags):
    if tag.startswith("I-"):
      first[j] = False
      for i, prev in enumerate(labels.tags):
        allowed[i, j] = prev[2:] == tag[2:] and prev != "O"
  return allowed, first


def viterbi(scores: np.ndarray, labels: BioLabels) -> list[int]:
  """The best tag sequence under the BIO constraints (no I-X without B-X/I-X before it).

  Args:
    scores: (T, L) per-word tag scores (log-probabilities).
    labels: the vocabulary.

  Returns:
    T tag ids.
  """
  scores = np.asarray(scores, np.float64)
  if scores.ndim != 2 or scores.shape[1] != labels.size:
    raise ValueError(f"viterbi: scores must be (T, {labels.size}), got {scores.shape}")
  if scores.shape[0] == 0:
    return []
  allowed, first = transition_mask(labels)
  penalty = np.where(allowed, 0.0, -np.inf)
  best = np.where(first, scores[0], -np.inf)
  back = np.zeros(scores.shape, np.int64)
  for t in range(1, scores.shape[0]):
    cand = best[:, None] + penalty  # (previous, next)
    back[t] = np.argmax(cand, axis=0)
    best = cand[back[t], np.arange(labels.size)] + scores[t]
  path = [int(np.argmax(best))]
  for t in range(scores.shape[0] - 1, 0, -1):
    path.append(int(back[t, path[-1]]))
  return path[::-1]


def tags_to_spans(tags: Sequence[int], words: Sequence[tuple[int, int]], labels: BioLabels
                  ) -> list[tuple[str, int, int]]:
  """Character spans of a word tag sequence (conlleval: an I-X not continuing X starts a span).

  Args:
    tags: tag id per word.
    words: (start, end) per word, relative to the sentence.
    labels: the vocabulary.

  Returns:
    (label, start, end) triples in word order.
  """
  if len(tags) != len(words):
    raise ValueError(f"tags_to_spans: {len(tags)} tags for {len(words)} words")
  spans: list[list[Any]] = []
  previous = "O"
  for tag_id, (start, end) in zip(tags, words):
    tag = labels.tags[tag_id]
    if tag == "O":
      previous = tag
      continue
    if tag.startswith("I-") and previous != "O" and previous[2:] == tag[2:]:
      spans[-1][2] = end
    else:
      spans.append([tag[2:], start, end])
    previous = tag
  return [(label, start, end) for label, start, end in spans]


def span_f1(gold: Sequence[Sequence[Mention]], pred: Sequence[Sequence[tuple]],
            types: Sequence[str]) -> dict[str, Any]:
  """Exact-span micro and macro F1 and per-type P/R/F1 (conlleval convention).

  Macro F1 averages the per-type F1 over the types that occur in the gold or the predictions
  (a type absent from both says nothing about the tagger).

  Args:
    gold: per sentence, the annotated mentions (labels outside `types` are ignored).
    pred: per sentence, (label, start, end) triples.
    types: the scored types.

  Returns:
    {'micro_f1', 'macro_f1', 'micro': prf, 'per_type': {type: prf}}.
  """
  exact = sofc_tasks.span_scores(gold, pred, types)["exact"]
  present = [t for t, s in exact["per_label"].items() if s["gold"] or s["predicted"]]
  macro = float(np.mean([exact["per_label"][t]["f1"] for t in present])) if present else 0.0
  return {"micro_f1": exact["micro"]["f1"], "macro_f1": macro, "micro": exact["micro"],
          "per_type": exact["per_label"]}
