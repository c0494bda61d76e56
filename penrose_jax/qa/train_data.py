"""Fixed-shape training examples and the exact, seeded replay schedule of Q&A fine-tuning.

Examples are (seq_len,) token rows with a float loss mask (mask[t] = 1 when token t is a
prediction target, i.e. it is scored from tokens < t); every batch is (batch_size, seq_len), so
the train step compiles once.

  * Section text / document text: the text is tokenized and cut into consecutive seq_len windows
    (the last one right-padded); every real token after the first of a window is a target.
  * Q&A: the question goes through the tokenizer's chat template (user turn + generation
    prompt, exactly the prompt `generation.chat` builds); the completion is
    '<answer>\\nReasoning: <reasoning>' followed by the template's end-of-turn token. Only the
    completion tokens (answer, reasoning, end of turn) are targets. The answer comes first so a
    short greedy answer is the answer itself.
  * General text: windows of general English text (LAMBADA contexts from a config path, or the
    packaged fallback `general_text.FALLBACK_GENERAL_TEXT`), replayed against forgetting.

Schedule (`sectionwise_plan`): section j (global reading order) owns updates
[j * k, (j + 1) * k). Its R = k * batch_size rows hold exactly round(R * general_fraction)
general rows, round(R * replay_fraction) replay rows (examples of sections < j; none for the
first section, whose rows go to the current section) and the rest current-section rows; their
positions are a permutation drawn from default_rng([seed, j]). Current rows cycle through a
seeded permutation of the section's examples, replay rows are drawn uniformly from earlier
sections, general rows cycle through a seeded permutation of the general examples. The plan is
a pure function of its inputs, so batch i is the same in a resumed run.
`onepass_plan` uses the same total number of rows (the same token budget) over the documents
read in order, with the same general fraction and no sections or Q&A.

Section length and order: `section_steps` gives each section either `steps_per_section` updates
or, with `epochs_per_section` E > 0, the fewest updates whose current rows cover E passes over
the section's examples (so every example is seen about E times whatever the section's size).
`section_order` orders a section's current rows: 'mixed' (one seeded permutation of all its
examples), 'text_then_qa' (its text rows, then its Q&A rows, per pass) or 'qa_then_text'.
`shuffled_plan` (mode 'onepass_augmented') permutes the rows of the section-wise plan over all
updates: the same examples the same number of times (identical tokens and loss tokens), with
no section order.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any, Optional, Sequence

import numpy as np

from penrose_jax.models.chat_format import end_of_turn, pad_id, qa_completion, qa_prompt

CURRENT, REPLAY, GENERAL = 0, 1, 2
ROW_KINDS = ("current", "replay", "general")
SECTION_ORDERS = ("mixed", "text_then_qa", "qa_then_text")


@dataclasses.dataclass(frozen=True)
class Example:
  """One fixed-length training row.

  Attributes:
    tokens: (seq_len,) int32 ids, right-padded.
    mask: (seq_len,) float32, 1 where the token is a loss target.
    kind: 'section', 'qa', 'general', 'document' or 'study'.
    groups: the facts whose texts the row holds (`pack_distinct_texts`; () = none).
  """

  tokens: np.ndarray
  mask: np.ndarray
  kind: str
  groups: tuple[str, ...] = ()


def _row(ids: Sequence[int], targets: Sequence[bool], seq_len: int, pad_id: int, kind: str
         ) -> Example:
  tokens = np.full((seq_len,), pad_id, np.int32)
  mask = np.zeros((seq_len,), np.float32)
  n = min(len(ids), seq_len)
  tokens[:n] = ids[:n]
  mask[:n] = np.asarray(targets[:n], np.float32)
  mask[0] = 0.0  # the first token has no prediction
  return Example(tokens, mask, kind)


def encode_qa_example(tokenizer: Any, question: str, answer: str, reasoning: str, seq_len: int,
                      eot: Optional[str] = None) -> Example:
  """Tokenizes one Q&A pair with the loss on the completion only.

  When prompt + completion exceed seq_len the prompt is cut from the left (keeping at least
  one token) so the answer stays in the row; an overlong completion is cut on the right.

  Args:
    tokenizer: a TextTokenizer.
    question: question text.
    answer: answer text.
    reasoning: reasoning text ('' for none).
    seq_len: row length.
    eot: end-of-turn marker (computed from the template when None).

  Returns:
    An Example of kind 'qa'.
  """
  eot = end_of_turn(tokenizer) if eot is None else eot
  prompt = tokenizer.encode(qa_prompt(tokenizer, question))
  completion = tokenizer.encode(qa_completion(answer, reasoning) + eot)
  keep = max(1, seq_len - len(completion))
  prompt = prompt[-keep:]
  ids = list(prompt) + list(completion)
  targets = [False] * len(prompt) + [True] * len(completion)
  return _row(ids, targets, seq_len, pad_id(tokenizer), "qa")


def _conversation_ids(tokenizer: Any, turns: Sequence[tuple[str, str]], eot: str
                      ) -> tuple[list[int], list[bool]]:
  """Token ids and target flags of a multi-turn chat (see `encode_qa_conversation`)."""
  ids: list[int] = []
  targets: list[bool] = []
  messages: list[dict[str, str]] = []
  done = ""
  for question, completion in turns:
    messages.append({"role": "user", "content": question})
    prompt = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    if not prompt.startswith(done):
      raise ValueError("the chat template is not prefix-consistent across turns; Q&A rows "
                       "cannot be packed (use pack_qa=False)")
    prompt_ids = tokenizer.encode(prompt[len(done):])
    completion_ids = tokenizer.encode(completion + eot)
    ids += list(prompt_ids) + list(completion_ids)
    targets += [False] * len(prompt_ids) + [True] * len(completion_ids)
    messages.append({"role": "assistant", "content": completion})
    done = tokenizer.apply_chat_template(messages, add_generation_prompt=False)
  return ids, targets


def encode_qa_conversation(tokenizer: Any, turns: Sequence[tuple[str, str]], seq_len: int,
                           eot: Optional[str] = None) -> Example:
  """Several Q&A pairs as one multi-turn chat row, the loss on every assistant turn.

  The chat template's text of the first k turns must be a prefix of that of k + 1 turns
  (checked), so each turn's prompt is the new text the template adds for its user message;
  prompts and completions are tokenized piece by piece (they meet at the template's special
  tokens).

  Args:
    tokenizer: a TextTokenizer with a chat template.
    turns: (question, completion text without end of turn) pairs, in order.
    seq_len: row length (the conversation is cut on the right).
    eot: end-of-turn marker (computed from the template when None).

  Returns:
    An Example of kind 'qa'.

  Raises:
    ValueError: the template is not prefix-consistent across turns.
  """
  eot = end_of_turn(tokenizer) if eot is None else eot
  ids, targets = _conversation_ids(tokenizer, turns, eot)
  return _row(ids, targets, seq_len, pad_id(tokenizer), "qa")


def pack_qa_examples(tokenizer: Any, turns: Sequence[tuple[str, str]], seq_len: int,
                     eot: Optional[str] = None) -> list[Example]:
  """Packs Q&A pairs, in the given order, greedily into multi-turn rows of seq_len tokens.

  Every row starts with a complete first turn (system prompt included, as a single question
  has it); a pair that does not fit starts the next row. A row holding one pair is exactly
  `encode_qa_example`'s row (an overlong pair keeps its answer, the prompt is cut on the left).

  Args:
    tokenizer: a TextTokenizer with a chat template.
    turns: (question, completion text) pairs.
    seq_len: row length.
    eot: end-of-turn marker.

  Returns:
    The rows (kind 'qa'), fewer than the pairs whenever two pairs fit in one row.
  """
  eot = end_of_turn(tokenizer) if eot is None else eot

  def emit(group: list[tuple[str, str]]) -> Example:
    if len(group) == 1:
      return encode_qa_example(tokenizer, group[0][0], group[0][1], "", seq_len, eot)
    return encode_qa_conversation(tokenizer, group, seq_len, eot)

  rows: list[Example] = []
  group: list[tuple[str, str]] = []
  for turn in turns:
    if group and len(_conversation_ids(tokenizer, group + [turn], eot)[0]) > seq_len:
      rows.append(emit(group))
      group = []
    group.append(turn)
  if group:
    rows.append(emit(group))
  return rows


def text_windows(tokenizer: Any, text: str, seq_len: int, kind: str,
                 max_windows: Optional[int] = None) -> list[Example]:
  """Cuts a text into consecutive seq_len-token rows, all real tokens targets.

  Args:
    tokenizer: a TextTokenizer.
    text: the text.
    seq_len: row length.
    kind: Example kind to record.
    max_windows: keep at most this many rows.

  Returns:
    The rows (empty for empty text); a trailing window shorter than 2 tokens is dropped.
  """
  ids = tokenizer.encode(text)
  rows = []
  for start in range(0, len(ids), seq_len):
    piece = ids[start:start + seq_len]
    if len(piece) < 2:
      break
    rows.append(_row(piece, [True] * len(piece), seq_len, pad_id(tokenizer), kind))
    if max_windows is not None and len(rows) >= max_windows:
      break
  return rows


def pack_distinct_texts(tokenizer: Any, texts: Sequence[tuple[str, str]], seq_len: int,
                        seed: int, kind: str = "study", open_rows: int = 8) -> list[Example]:
  """Packs short texts whole into seq_len rows, never two texts of one group in a row.

  Paraphrases of one fact in one context window let the model copy the fact from the window
  instead of recalling it (a Physics of LMs 3.1 replication: 7 % recall against 97.5 %), so a
  text goes into the first of the last `open_rows` rows that has room and no text of its group,
  else starts a new row. Texts are taken in a seeded random order and joined by a blank line; a
  text longer than seq_len is cut into rows of its own.

  Args:
    tokenizer: a TextTokenizer.
    texts: (text, group) pairs; group '' = a text of no fact (never conflicts).
    seq_len: row length.
    seed: the order's seed.
    kind: Example kind.
    open_rows: rows still accepting texts (bounds the packing cost).

  Returns:
    The rows, all tokens targets (each row's groups recorded in `Example.groups`).
  """
  order = np.random.default_rng(seed).permutation(len(texts))
  rows: list[tuple[list[int], list[str]]] = []  # (ids, groups)
  long_rows: list[Example] = []
  pad = pad_id(tokenizer)
  for i in order:
    text, group = texts[int(i)]
    ids = tokenizer.encode(text + "\n\n")
    if len(ids) > seq_len:
      long_rows += [dataclasses.replace(ex, groups=(group,) if group else ())
                    for ex in text_windows(tokenizer, text, seq_len, kind)]
      continue
    for row_ids, groups in rows[-open_rows:]:
      if len(row_ids) + len(ids) <= seq_len and not (group and group in groups):
        row_ids.extend(ids)
        groups.append(group)
        break
    else:
      rows.append((list(ids), [group]))
  packed = [dataclasses.replace(_row(ids, [True] * len(ids), seq_len, pad, kind),
                                groups=tuple(g for g in groups if g)) for ids, groups in rows]
  return packed + long_rows


def load_general_texts(path: Optional[str | pathlib.Path], max_texts: int = 200
                       ) -> tuple[list[str], str]:
  """General-domain texts for replay: LAMBADA-style JSONL contexts, a .txt file, or fallback.

  Args:
    path: a .jsonl file whose lines have 'context' (+ 'continuation'), a text file, or
      None/'' for the packaged fallback.
    max_texts: keep the first this many texts.

  Returns:
    (texts, source note).
  """
  from penrose_jax.data import general_text  # local: tiny module, only replay needs it
  if path:
    path = pathlib.Path(path)
    if path.is_file():
      if path.suffix == ".jsonl":
        texts = []
        with path.open(encoding="utf-8") as handle:
          for line in handle:
            if line.strip():
              row = json.loads(line)
              texts.append((row.get("context", "") + " " + row.get("continuation", "")).strip())
            if len(texts) >= max_texts:
              break
      else:
        texts = [p for p in path.read_text(encoding="utf-8").split("\n\n") if p.strip()]
      return texts[:max_texts], f"general text from {path}"
    note = f"general text {path} not found; using the packaged fallback text"
  else:
    note = "no general text path; using the packaged fallback text"
  return list(general_text.FALLBACK_GENERAL_TEXT[:max_texts]), note


def _counts(rows: int, fraction: float) -> int:
  return int(round(rows * fraction))


def _current_rows(rows: int, first: bool, has_general: bool, replay_fraction: float,
                  general_fraction: float) -> int:
  n_general = _counts(rows, general_fraction) if has_general else 0
  return rows - n_general - (0 if first else _counts(rows, replay_fraction))


def section_steps(section_sizes: Sequence[int], steps_per_section: int, epochs_per_section: float,
                  batch_size: int, replay_fraction: float, general_fraction: float,
                  has_general: bool) -> list[int]:
  """Updates per section: fixed, or enough for `epochs_per_section` passes (module docstring).

  Args:
    section_sizes: examples per section.
    steps_per_section: the fixed count, used when epochs_per_section <= 0.
    epochs_per_section: passes over each section's examples (0 = use steps_per_section).
    batch_size: rows per update.
    replay_fraction: share of replay rows (none in the first section).
    general_fraction: share of general rows (when has_general).
    has_general: whether general rows exist.

  Returns:
    One update count per section (each >= 1).

  Raises:
    ValueError: epochs requested but no row of a section can be a current row.
  """
  if epochs_per_section <= 0:
    return [steps_per_section] * len(section_sizes)
  out = []
  for j, size in enumerate(section_sizes):
    need = math.ceil(epochs_per_section * size)
    if _current_rows(1 << 16, j == 0, has_general, replay_fraction, general_fraction) <= 0:
      raise ValueError("epochs_per_section needs replay_fraction + general_replay_fraction < 1")
    k = 1
    while _current_rows(k * batch_size, j == 0, has_general, replay_fraction,
                        general_fraction) < need:
      k += 1
    out.append(k)
  return out


def _ordered_current(rng: np.random.Generator, size: int, text_count: int, order: str
                     ) -> np.ndarray:
  """One pass over a section's local example ids in the configured order."""
  if order == "mixed":
    return rng.permutation(size)
  text = rng.permutation(text_count)
  qa = text_count + rng.permutation(size - text_count)
  return np.concatenate([text, qa] if order == "text_then_qa" else [qa, text])


def sectionwise_plan(section_sizes: Sequence[int], num_general: int,
                     steps_per_section: int | Sequence[int], batch_size: int,
                     replay_fraction: float, general_fraction: float, seed: int,
                     text_counts: Optional[Sequence[int]] = None, order: str = "mixed"
                     ) -> tuple[np.ndarray, np.ndarray]:
  """The exact row schedule of section-wise training (module docstring).

  Args:
    section_sizes: number of examples of each section, in reading order (each > 0); example
      ids are global: section j owns ids [sum(sizes[:j]), sum(sizes[:j + 1])).
    num_general: number of general examples (ids follow all section ids); 0 disables general
      replay.
    steps_per_section: updates per section (k), or one count per section (`section_steps`).
    batch_size: rows per update.
    replay_fraction: fraction of each section's rows replaying earlier sections.
    general_fraction: fraction of each section's rows of general text.
    seed: plan seed.
    text_counts: per section, how many of its examples (its first ids) are text rows; the
      rest are Q&A rows. Needed for orders other than 'mixed'.
    order: one of SECTION_ORDERS.

  Returns:
    (example_ids, row_kinds), each (total updates, batch_size) int64; kinds are
    CURRENT / REPLAY / GENERAL.

  Raises:
    ValueError: fractions outside [0, 1] or summing above 1, an empty section, or an unknown
      order.
  """
  if order not in SECTION_ORDERS:
    raise ValueError(f"section_order must be one of {SECTION_ORDERS}, got {order!r}")
  if order != "mixed" and text_counts is None:
    raise ValueError(f"section_order {order!r} needs text_counts")
  if not (0 <= replay_fraction <= 1 and 0 <= general_fraction <= 1
          and replay_fraction + general_fraction <= 1):
    raise ValueError(f"replay fractions must be in [0, 1] and sum to <= 1, got "
                     f"{replay_fraction} + {general_fraction}")
  if any(size <= 0 for size in section_sizes):
    raise ValueError(f"every section needs at least one example, got sizes {list(section_sizes)}")
  offsets = np.concatenate([[0], np.cumsum(section_sizes)]).astype(np.int64)
  general_base = int(offsets[-1])
  steps = ([steps_per_section] * len(section_sizes) if isinstance(steps_per_section, int)
           else list(steps_per_section))
  ids_out, kinds_out = [], []
  general_cursor = 0
  general_perm = np.random.default_rng([seed, 1 << 20]).permutation(max(num_general, 1))
  for j, size in enumerate(section_sizes):
    rows = steps[j] * batch_size
    n_general = _counts(rows, general_fraction) if num_general > 0 else 0
    n_replay = _counts(rows, replay_fraction) if j > 0 else 0
    n_current = rows - n_general - n_replay
    kinds = np.array([CURRENT] * n_current + [REPLAY] * n_replay + [GENERAL] * n_general,
                     np.int64)
    kinds = np.random.default_rng([seed, j]).permutation(kinds)
    ids = np.zeros(rows, np.int64)
    # Current rows take their examples in time order (kinds keep row positions ascending), so
    # an ordered pass puts a section's text rows before (or after) its Q&A rows.
    current_perm = _ordered_current(np.random.default_rng([seed, j, 1]), size,
                                    text_counts[j] if text_counts is not None else size, order)
    is_current = kinds == CURRENT
    ids[is_current] = offsets[j] + current_perm[np.arange(n_current) % size]
    if n_replay:
      ids[kinds == REPLAY] = np.random.default_rng([seed, j, 2]).integers(
          0, offsets[j], n_replay)
    if n_general:
      picks = general_perm[(general_cursor + np.arange(n_general)) % num_general]
      ids[kinds == GENERAL] = general_base + picks
      general_cursor += n_general
    ids_out.append(ids.reshape(steps[j], batch_size))
    kinds_out.append(kinds.reshape(steps[j], batch_size))
  return np.concatenate(ids_out), np.concatenate(kinds_out)


def shuffled_plan(ids: np.ndarray, kinds: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """The section-wise plan's rows permuted over all updates (mode 'onepass_augmented').

  Args:
    ids: (steps, batch_size) example ids of `sectionwise_plan`.
    kinds: its row kinds.
    seed: permutation seed.

  Returns:
    (example_ids, row_kinds) of the same shape and multiset of rows; replay rows become
    CURRENT rows (without section order nothing is "earlier").
  """
  perm = np.random.default_rng([seed, 3]).permutation(ids.size)
  new_kinds = np.where(kinds == REPLAY, CURRENT, kinds).reshape(-1)[perm]
  return ids.reshape(-1)[perm].reshape(ids.shape), new_kinds.reshape(kinds.shape)


def onepass_plan(num_document_examples: int, num_general: int, num_steps: int, batch_size: int,
                 general_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
  """The baseline schedule: document windows in reading order, same budget, same general share.

  Args:
    num_document_examples: document windows (ids 0..n-1, in reading order; wrapped around
      when the budget is larger).
    num_general: general examples (ids follow the document ids); 0 disables them.
    num_steps: updates (equal to the section-wise run's for the same token budget).
    batch_size: rows per update.
    general_fraction: fraction of all rows that are general text.
    seed: plan seed.

  Returns:
    (example_ids, row_kinds), each (num_steps, batch_size); kinds CURRENT or GENERAL.
  """
  if num_document_examples <= 0:
    raise ValueError("onepass_plan needs at least one document window")
  rows = num_steps * batch_size
  n_general = _counts(rows, general_fraction) if num_general > 0 else 0
  kinds = np.array([CURRENT] * (rows - n_general) + [GENERAL] * n_general, np.int64)
  kinds = np.random.default_rng([seed, 0]).permutation(kinds)
  ids = np.zeros(rows, np.int64)
  ids[kinds == CURRENT] = np.arange(rows - n_general) % num_document_examples
  if n_general:
    perm = np.random.default_rng([seed, 1 << 20]).permutation(num_general)
    ids[kinds == GENERAL] = num_document_examples + perm[np.arange(n_general) % num_general]
  return ids.reshape(num_steps, batch_size), kinds.reshape(num_steps, batch_size)


def stack_batch(examples: Sequence[Example], ids: Sequence[int]) -> dict[str, np.ndarray]:
  """Stacks the rows of one update.

  Args:
    examples: the example table.
    ids: indices into it.

  Returns:
    {'tokens': (B, T) int32, 'mask': (B, T) float32}.
  """
  return {"tokens": np.stack([examples[int(i)].tokens for i in ids]),
          "mask": np.stack([examples[int(i)].mask for i in ids])}


def padded_batches(examples: Sequence[Example], batch_size: int) -> list[dict[str, np.ndarray]]:
  """Cuts examples into full (batch_size, T) batches, padding the last with zero-mask rows.

  Args:
    examples: rows of equal length (non-empty).
    batch_size: rows per batch.

  Returns:
    The batches.
  """
  out = []
  for start in range(0, len(examples), batch_size):
    chunk = list(examples[start:start + batch_size])
    filler = Example(np.zeros_like(chunk[0].tokens), np.zeros_like(chunk[0].mask), "pad")
    chunk += [filler] * (batch_size - len(chunk))
    out.append(stack_batch(chunk, range(batch_size)))
  return out
