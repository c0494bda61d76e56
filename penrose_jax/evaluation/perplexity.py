"""Token-level perplexity over non-overlapping windows of text files, per configured text set.

`text_set_perplexities` is the one loop over a config's `text_sets` (skip the missing ones, read,
tokenize, spread windows, score) that the compress, align and evaluate jobs share;
`text_set_windows` is its reading half, for a job that scores two models on the same windows.
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
from typing import Any, Mapping, Optional, Sequence

import numpy as np
from tqdm import tqdm

from penrose_jax.data import text_sources
from penrose_jax.evaluation.scoring import batched, next_token_logprobs, pad_batch
from penrose_jax.models.config import ModelConfig
from penrose_jax.parallel.placement import place_batch, to_host


def window_picks(token_lists: Sequence[Sequence[int]], window: int,
                 max_windows: Optional[int] = None, seed: int = 0) -> list[tuple[int, int]]:
  """Which windows to score: (document index, start token), spread over every document.

  Taking the first N windows in file order describes one or two documents of a set; instead
  the N windows are shared out evenly over the documents (a document gets floor or ceil of
  N / documents, capped at what it has, the surplus going to the others), and inside a
  document they sit at evenly spaced positions. With fewer windows than documents, evenly
  spaced documents get one window each. The seed only shifts the spacing.

  Args:
    token_lists: one token list per document (windows never cross documents).
    window: tokens per window.
    max_windows: how many windows to keep (None or >= all windows keeps all).
    seed: shifts the evenly spaced picks (same seed, same windows).

  Returns:
    Sorted (document index, start token) pairs of windows with at least 2 tokens.
  """
  starts = [[s for s in range(0, len(tokens), window) if len(tokens) - s >= 2]
            for tokens in token_lists]
  total = sum(len(s) for s in starts)
  if max_windows is None or max_windows >= total:
    return [(d, s) for d, doc in enumerate(starts) for s in doc]
  if max_windows <= 0:
    return []
  rng = np.random.default_rng(seed)
  docs = [d for d, doc in enumerate(starts) if doc]
  if max_windows < len(docs):
    offset = rng.random()
    chosen = sorted({docs[int((k + offset) * len(docs) / max_windows)]
                     for k in range(max_windows)})
    quota = {d: 1 for d in chosen}
  else:
    quota = {d: 0 for d in docs}
    left = max_windows
    open_docs = list(docs)
    while left > 0:  # equal shares; documents that run out pass their share on
      share = max(1, left // len(open_docs))
      for d in rng.permutation(open_docs).tolist():
        take = min(share, len(starts[d]) - quota[d], left)
        quota[d] += take
        left -= take
        if left == 0:
          break
      open_docs = [d for d in open_docs if quota[d] < len(starts[d])]
  offset = rng.random()
  picks = []
  for d, q in quota.items():
    n = len(starts[d])
    picks.extend((d, starts[d][int((k + offset) * n / q)]) for k in range(q))
  return sorted(picks)


def token_windows(token_lists: Sequence[Sequence[int]], window: int,
                  max_windows: Optional[int] = None, seed: int = 0) -> list[list[int]]:
  """Cuts documents into non-overlapping windows, keeping `max_windows` spread over all of them.

  Args:
    token_lists: one token list per document (windows never cross documents).
    window: tokens per window.
    max_windows: windows to keep, chosen by `window_picks` (None keeps all).
    seed: see `window_picks`.

  Returns:
    List of windows with at least 2 tokens (the tail window of a document may be shorter).
  """
  return windows_at(token_lists, window_picks(token_lists, window, max_windows, seed), window)


def windows_at(token_lists: Sequence[Sequence[int]], picks: Sequence[tuple[int, int]],
               window: int) -> list[list[int]]:
  """The token windows at `window_picks` positions.

  Args:
    token_lists: one token list per document.
    picks: (document index, start token) pairs.
    window: tokens per window.

  Returns:
    One window per pick (a document's tail window may be shorter).
  """
  return [list(token_lists[d][s:s + window]) for d, s in picks]


def picks_record(names: Sequence[str], picks: Sequence[tuple[int, int]]) -> dict[str, list[int]]:
  """The chosen windows as {document name: [start tokens]}, for report.json.

  Args:
    names: document names, in the order of the token lists.
    picks: from `window_picks`.

  Returns:
    Document name -> sorted start tokens of its scored windows.
  """
  out: dict[str, list[int]] = {}
  for d, s in picks:
    out.setdefault(str(names[d]), []).append(int(s))
  return out


def perplexity(params: Any, config: ModelConfig, windows: Sequence[Sequence[int]],
               batch_size: int = 8, progress: bool = False) -> dict[str, float]:
  """Perplexity of the model over token windows (each predicts tokens 2..n from the prefix).

  Args:
    params: params pytree.
    config: the architecture.
    windows: token windows (e.g. from `token_windows`).
    batch_size: windows per forward call.
    progress: show a progress bar.

  Returns:
    {'ppl', 'nll', 'tokens', 'windows'}.
  """
  if not windows:
    raise ValueError("perplexity: no token windows to score (empty text set?)")
  total_nll, total_tokens = 0.0, 0
  chunks = list(batched(list(windows), batch_size))
  for chunk in tqdm(chunks, desc="perplexity", disable=not progress, leave=False):
    tokens, lengths = pad_batch(chunk, batch_size)
    logp, _ = next_token_logprobs(params, place_batch(tokens), config)
    logp = to_host(logp)
    mask = np.arange(tokens.shape[1] - 1)[None, :] < (lengths[:, None] - 1)
    total_nll -= float((logp * mask).sum())
    total_tokens += int(mask.sum())
  mean = total_nll / total_tokens
  return {"ppl": math.exp(mean), "nll": mean, "tokens": total_tokens, "windows": len(windows)}


@dataclasses.dataclass
class TextSetWindows:
  """The scored windows of one text source.

  Attributes:
    windows: token windows (see `windows_at`).
    picks: document name -> start tokens of its windows (`picks_record`).
    documents: documents in the source.
  """

  windows: list[list[int]]
  picks: dict[str, list[int]]
  documents: int


def text_set_windows(tokenizer: Any, source: str, window: int = 256,
                     max_windows: Optional[int] = None, seed: int = 0) -> TextSetWindows:
  """Reads a text source and spreads `window`-token windows over its documents.

  Args:
    tokenizer: a TextTokenizer.
    source: a text source spec (folder, file, .jsonl, optional '@split'; see
      data.text_sources).
    window: window length in tokens.
    max_windows: windows kept, spread over every document (None = all).
    seed: see `window_picks`.

  Returns:
    The windows, where they start, and the number of documents.
  """
  docs = list(text_sources.read_source(str(source)))
  token_lists = [tokenizer.encode(text) for _, text in docs]
  picks = window_picks(token_lists, window, max_windows, seed)
  return TextSetWindows(windows_at(token_lists, picks, window),
                        picks_record([name for name, _ in docs], picks), len(docs))


def text_perplexity(params: Any, config: ModelConfig, tokenizer: Any, source: str,
                    window: int = 256, max_windows: Optional[int] = None, batch_size: int = 8,
                    progress: bool = False, seed: int = 0) -> dict[str, Any]:
  """Perplexity over non-overlapping `window`-token windows of a text source.

  Args:
    params: params pytree.
    config: the architecture.
    tokenizer: a TextTokenizer.
    source: a text source spec (folder, file, .jsonl, optional '@split'; see
      data.text_sources).
    window: window length in tokens.
    max_windows: windows scored, spread over every document (None = all).
    batch_size: windows per forward call.
    progress: show a progress bar.
    seed: see `window_picks`.

  Returns:
    {'ppl', 'nll', 'tokens', 'windows', 'documents', 'documents_scored', 'picks'}: picks maps
    each scored document to the start tokens of its windows.
  """
  scored = text_set_windows(tokenizer, source, window, max_windows, seed)
  result: dict[str, Any] = perplexity(params, config, scored.windows, batch_size, progress)
  result.update(documents=scored.documents, documents_scored=len(scored.picks),
                picks=scored.picks)
  return result


def text_set_perplexities(params: Any, config: ModelConfig, tokenizer: Any,
                          text_sets: Mapping[str, str], window: int = 256,
                          max_windows: Optional[int] = None, batch_size: int = 8,
                          progress: bool = False
                          ) -> tuple[dict[str, dict[str, Any]], list[tuple[str, pathlib.Path]]]:
  """`text_perplexity` of every text set whose source exists, in name order.

  Args:
    params: params pytree.
    config: the architecture.
    tokenizer: a TextTokenizer.
    text_sets: name -> text source spec (a config's `text_sets`, skips already applied).
    window: window length in tokens.
    max_windows: windows scored per set, spread over its documents (None = all).
    batch_size: windows per forward call.
    progress: show a progress bar.

  Returns:
    ({name: text_perplexity result}, [(name, missing path)]): a set whose source is missing is
    not fatal (no ../shared beside a clone); the job names it in its report.
  """
  results: dict[str, dict[str, Any]] = {}
  missing: list[tuple[str, pathlib.Path]] = []
  for name, spec in sorted(text_sets.items()):
    path = text_sources.source_path(spec)
    if not path.exists():
      missing.append((name, path))
      continue
    results[name] = text_perplexity(params, config, tokenizer, spec, window=window,
                                    max_windows=max_windows, batch_size=batch_size,
                                    progress=progress)
  return results, missing
