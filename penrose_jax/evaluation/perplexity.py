"""Token-level perplexity over non-overlapping windows of text files."""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np
from tqdm import tqdm

from penrose_jax.data import text_sources
from penrose_jax.evaluation.scoring import batched, next_token_logprobs, pad_batch
from penrose_jax.models.config import ModelConfig
from penrose_jax.parallel.placement import place_batch, to_host


def token_windows(token_lists: Sequence[Sequence[int]], window: int,
                  max_windows: Optional[int] = None) -> list[list[int]]:
  """Cuts each document's tokens into non-overlapping windows (the tail window may be shorter).

  Args:
    token_lists: one token list per document (windows never cross documents).
    window: tokens per window.
    max_windows: keep only the first this many windows (None keeps all).

  Returns:
    List of windows with at least 2 tokens.
  """
  windows = []
  for tokens in token_lists:
    for start in range(0, len(tokens), window):
      piece = list(tokens[start:start + window])
      if len(piece) >= 2:
        windows.append(piece)
  return windows if max_windows is None else windows[:max_windows]


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


def text_perplexity(params: Any, config: ModelConfig, tokenizer: Any, source: str,
                    window: int = 256, max_windows: Optional[int] = None, batch_size: int = 8,
                    progress: bool = False) -> dict[str, float]:
  """Perplexity over non-overlapping `window`-token windows of a text source.

  Args:
    params: params pytree.
    config: the architecture.
    tokenizer: a TextTokenizer.
    source: a text source spec (folder, file, .jsonl, optional '@split'; see
      data.text_sources).
    window: window length in tokens.
    max_windows: cap on windows scored (None = all).
    batch_size: windows per forward call.
    progress: show a progress bar.

  Returns:
    {'ppl', 'nll', 'tokens', 'windows'}.
  """
  token_lists = [tokenizer.encode(text) for _, text in text_sources.read_source(str(source))]
  return perplexity(params, config, token_windows(token_lists, window, max_windows), batch_size,
                    progress)
