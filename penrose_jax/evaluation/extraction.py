"""Runs the SOFC-Exp extraction tasks (`sofc_tasks`) on one model and scores them.

Detection reads one forward pass per sentence: the answer is 'yes' when the log-probability of
the first token of 'yes' after the prompt exceeds that of 'no' (both are one token in SmolLM2's
vocabulary, so this is the answers' full log-likelihood there). Entities and slots decode
greedily with `generation.generate_batch` (KV cache; `generate_batch_size` left-padded prompts
at a time, each answer equal to one-by-one greedy decoding). Prompts longer than the model's
context minus the answer budget keep their last tokens (counted in `truncated_prompts`; only
the tiny test model is that short).

Sentences: `max_sentences` > 0 draws that many sentences per task, shared out evenly over the
split's articles (`spread_sentences`: an article with fewer candidates passes its surplus on; a
seeded draw inside each article), kept in document order, so a capped run is a fixed subset
that describes every article. A plain draw over the pooled sentences had left some dev articles
with one experiment sentence or none in a 40-sentence run.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from penrose_jax.evaluation import sofc_annotations, sofc_tasks
from penrose_jax.evaluation.scoring import batched, pad_batch
from penrose_jax.models import generation, llama
from penrose_jax.models.config import ModelConfig
from penrose_jax.parallel.placement import place_batch, to_host


@dataclasses.dataclass
class ExtractionSettings:
  """What `evaluate_extraction` runs (the fields of the evaluate config's `extraction`).

  Attributes:
    data_root: SOFC-Exp root (metadata.tsv, texts/, annotations/).
    split: split evaluated ('dev' or 'train').
    documents: comma list of doc_ids of that split ('' = all).
    max_articles: first this many articles of the split (0 = all).
    max_sentences: sentences per task, seeded draw (0 = all).
    k_shot: comma list of shot counts to run, e.g. '0,4'.
    tasks: comma list of sofc_tasks.TASKS.
    seed: seed of the sentence draw and of the k-shot examples.
    max_new_tokens: answer budget for entities / slots.
    batch_size: prompts per detection forward pass.
    generate_batch_size: prompts decoded together for entities / slots.
    samples: raw answers kept in the report per task and shot count.
  """

  data_root: str
  split: str = "dev"
  documents: str = ""
  max_articles: int = 0
  max_sentences: int = 0
  k_shot: str = "0,4"
  tasks: str = "detection,entities,slots"
  seed: int = 0
  max_new_tokens: int = 64
  batch_size: int = 8
  generate_batch_size: int = 16
  samples: int = 3


def settings_from_config(config: Any, data_root: str) -> ExtractionSettings:
  """ExtractionSettings from a config section (unknown keys such as `enabled` are ignored).

  Args:
    config: a ConfigDict / mapping with ExtractionSettings field names.
    data_root: the resolved data root.

  Returns:
    ExtractionSettings.
  """
  names = {f.name for f in dataclasses.fields(ExtractionSettings)} - {"data_root"}
  return ExtractionSettings(data_root=data_root, **{k: config[k] for k in names if k in config})


def _split_list(text: str) -> list[str]:
  return [part.strip() for part in str(text).split(",") if part.strip()]


def select_sentences(sentences: Sequence[Any], max_sentences: int, seed: int) -> list[Any]:
  """A seeded subset of at most max_sentences, in the original order (all when 0).

  Args:
    sentences: candidates.
    max_sentences: cap (0 = all).
    seed: generator seed.

  Returns:
    The kept sentences.
  """
  if max_sentences <= 0 or len(sentences) <= max_sentences:
    return list(sentences)
  keep = np.random.default_rng(seed).choice(len(sentences), max_sentences, replace=False)
  return [sentences[i] for i in sorted(keep)]


def article_quotas(sizes: Sequence[int], total: int, seed: int) -> list[int]:
  """How many of `total` picks each article gets: equal shares, surplus passed on.

  Args:
    sizes: candidates per article.
    total: picks wanted (>= sum(sizes) takes everything).
    seed: orders the articles that get one more than the others, and, with fewer picks than
      articles, which articles get one.

  Returns:
    One quota per article (each <= its size; they sum to min(total, sum(sizes))).
  """
  quota = [0] * len(sizes)
  left = min(total, sum(sizes))
  rng = np.random.default_rng(seed)
  open_ = [i for i, n in enumerate(sizes) if n > 0]
  while left > 0 and open_:
    share = max(1, left // len(open_))
    for i in rng.permutation(open_).tolist():
      take = min(share, sizes[i] - quota[i], left)
      quota[i] += take
      left -= take
      if left == 0:
        break
    open_ = [i for i in open_ if quota[i] < sizes[i]]
  return quota


def spread_sentences(groups: Sequence[Sequence[Any]], max_sentences: int, seed: int
                     ) -> list[Any]:
  """A seeded subset of at most max_sentences shared out over groups (articles), in order.

  Args:
    groups: candidates per article, in document order.
    max_sentences: cap (0 = all).
    seed: generator seed (quotas and the draw inside each article).

  Returns:
    The kept sentences, article by article in the original order.
  """
  if max_sentences <= 0 or sum(len(g) for g in groups) <= max_sentences:
    return [s for g in groups for s in g]
  quotas = article_quotas([len(g) for g in groups], max_sentences, seed)
  return [s for i, (g, q) in enumerate(zip(groups, quotas)) if q
          for s in select_sentences(g, q, seed + 1 + i)]


@functools.partial(jax.jit, static_argnames=("config",))
def _last_logprobs(params: Any, tokens: jax.Array, lengths: jax.Array, config: ModelConfig
                   ) -> jax.Array:
  """(B, V) log-probabilities of the token after each row's last real token."""
  logits = llama.forward(params, tokens, config).logits
  last = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
  return jax.nn.log_softmax(last.astype(jnp.float32), axis=-1)


def _fit(ids: list[int], limit: int) -> tuple[list[int], bool]:
  """Keeps the last `limit` ids (at least one)."""
  limit = max(1, limit)
  return (ids[-limit:], True) if len(ids) > limit else (ids, False)


def detect(params: Any, config: ModelConfig, tokenizer: Any, prompts: Sequence[str],
           batch_size: int) -> tuple[list[bool], list[float], int]:
  """Yes/no answers by comparing the first-token log-probabilities of 'yes' and 'no'.

  Args:
    params: params pytree.
    config: the architecture.
    tokenizer: a TextTokenizer with a chat template.
    prompts: user messages (sofc_tasks.build_prompt).
    batch_size: prompts per forward pass.

  Returns:
    (answers (True = yes), log p(yes) - log p(no), number of truncated prompts).
  """
  yes_id, no_id = tokenizer.encode("yes")[0], tokenizer.encode("no")[0]
  if yes_id == no_id:
    raise ValueError("the tokenizer gives 'yes' and 'no' the same first token")
  encoded, truncated = [], 0
  for prompt in prompts:
    ids, cut = _fit(tokenizer.encode(sofc_tasks.chat_prompt(tokenizer, prompt)),
                    config.max_position)
    encoded.append(ids)
    truncated += cut
  margins = np.zeros(len(encoded))
  # Length-sorted batches pad little; margins are put back in prompt order.
  order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
  for chunk in batched(order, batch_size):
    tokens, lengths = pad_batch([encoded[i] for i in chunk], batch_size)
    lengths = np.maximum(lengths, 1)
    logp = to_host(_last_logprobs(params, place_batch(tokens), place_batch(lengths), config))
    for row, index in enumerate(chunk):
      margins[index] = float(logp[row, yes_id] - logp[row, no_id])
  return [bool(m > 0) for m in margins], margins.tolist(), truncated


def generate_answers(params: Any, config: ModelConfig, tokenizer: Any, prompts: Sequence[str],
                     max_new_tokens: int, batch_size: int = 16) -> tuple[list[str], int]:
  """Greedy answers to user messages through the chat template.

  Args:
    params: params pytree.
    config: the architecture.
    tokenizer: a TextTokenizer with a chat template.
    prompts: user messages.
    max_new_tokens: answer budget.
    batch_size: prompts decoded together (`generation.generate_batch`).

  Returns:
    (decoded answers, number of truncated prompts).
  """
  encoded, truncated = [], 0
  for prompt in prompts:
    ids, cut = _fit(tokenizer.encode(sofc_tasks.chat_prompt(tokenizer, prompt)),
                    config.max_position - max_new_tokens)
    truncated += cut
    encoded.append(ids)
  outs = generation.generate_batch(params, config, encoded, max_new_tokens,
                                   stop_token_ids=tokenizer.stop_token_ids,
                                   batch_size=batch_size)
  return [tokenizer.decode(out, skip_special_tokens=True) for out in outs], truncated


def _run_task(params: Any, config: ModelConfig, tokenizer: Any, task: str,
              sentences: Sequence[sofc_annotations.Sentence],
              examples: Sequence[sofc_annotations.Sentence], settings: ExtractionSettings
              ) -> tuple[dict[str, Any], int]:
  """Scores of one task at one shot count, with a few raw answers."""
  prompts = [sofc_tasks.build_prompt(s.text, task, examples) for s in sentences]
  ids = [f"{s.doc_id}:{s.sentence_id}" for s in sentences]
  if task == "detection":
    answers, margins, truncated = detect(params, config, tokenizer, prompts, settings.batch_size)
    scores = sofc_tasks.detection_scores([s.is_experiment for s in sentences], answers)
    scores["samples"] = [{"sentence": i, "gold": s.is_experiment, "yes_minus_no": m}
                         for i, s, m in zip(ids, sentences, margins)][:settings.samples]
    return scores, truncated
  replies, truncated = generate_answers(params, config, tokenizer, prompts,
                                        settings.max_new_tokens, settings.generate_batch_size)
  labels = sofc_tasks.task_labels(task)
  preds = [sofc_tasks.predicted_spans(s.text, sofc_tasks.parse_labelled_lines(r, labels))
           for s, r in zip(sentences, replies)]
  scores = sofc_tasks.span_scores([sofc_tasks.gold_mentions(s, task) for s in sentences], preds,
                                  labels)
  scores["sentences"] = len(sentences)
  scores["samples"] = [{"sentence": i, "reply": r, "gold": sofc_tasks.gold_answer(s, task)}
                       for i, s, r in zip(ids, sentences, replies)][:settings.samples]
  return scores, truncated


def evaluate_extraction(params: Any, config: ModelConfig, tokenizer: Any,
                        settings: ExtractionSettings, progress: bool = False) -> dict[str, Any]:
  """Scores a model on the SOFC-Exp tasks of one split, zero-shot and k-shot.

  Args:
    params: params pytree (dense, or a dense equivalent).
    config: the architecture.
    tokenizer: a TextTokenizer with a chat template.
    settings: ExtractionSettings.
    progress: log one line per task and shot count.

  Returns:
    {'split', 'articles', 'sentences' (per task), 'prompt_format' ('chat_template', or 'plain'
    for a tokenizer without one), 'majority' (always 'no' / no mentions),
    '<k>_shot': {task: scores}, 'summary' (flat headline numbers), 'truncated_prompts',
    'wall_s'}; 'sentences_per_article' gives each task's count per article.
  """
  start = time.time()
  tasks = _split_list(settings.tasks)
  unknown = [t for t in tasks if t not in sofc_tasks.TASKS]
  if unknown:
    raise ValueError(f"extraction.tasks: unknown {unknown}; expected some of {sofc_tasks.TASKS}")
  shots = [int(k) for k in _split_list(settings.k_shot)]
  articles = sofc_annotations.load_articles(settings.data_root, settings.split,
                                            _split_list(settings.documents),
                                            settings.max_articles)
  if not articles:
    raise ValueError(f"no {settings.split!r} articles under {settings.data_root}")
  pool: list[sofc_annotations.Sentence] = []
  if any(shots):
    # k-shot examples always come from the train split, never from the evaluated articles.
    pool = [s for a in sofc_annotations.load_articles(settings.data_root, "train")
            for s in a.sentences]
  chosen = {t: spread_sentences([sofc_tasks.task_sentences(a.sentences, t) for a in articles],
                                settings.max_sentences, settings.seed) for t in tasks}
  out: dict[str, Any] = {"split": settings.split, "articles": [a.doc_id for a in articles],
                         "sentences": {t: len(s) for t, s in chosen.items()},
                         "sentences_per_article": {
                             t: {a.doc_id: sum(1 for s in c if s.doc_id == a.doc_id)
                                 for a in articles} for t, c in chosen.items()},
                         "prompt_format": ("chat_template" if getattr(tokenizer, "chat_template",
                                                                      None) else "plain")}
  if "detection" in chosen:
    gold = [s.is_experiment for s in chosen["detection"]]
    majority = sofc_tasks.detection_scores(gold, [False] * len(gold))
    out["majority"] = {"detection_accuracy": majority["accuracy"], "detection_f1": 0.0,
                       "entity_micro_f1": 0.0, "slot_micro_f1": 0.0}
  summary: dict[str, float] = {}
  truncated = 0
  for k in shots:
    key = f"{k}_shot"
    out[key] = {}
    for task in tasks:
      examples = sofc_tasks.pick_examples(pool, task, k, settings.seed)
      t0 = time.time()
      scores, cut = _run_task(params, config, tokenizer, task, chosen[task], examples, settings)
      truncated += cut
      scores["examples"] = [f"{s.doc_id}:{s.sentence_id}" for s in examples]
      scores["wall_s"] = time.time() - t0
      out[key][task] = scores
      if task == "detection":
        summary[f"detection_accuracy_{key}"] = scores["accuracy"]
        summary[f"detection_f1_{key}"] = scores["f1"]
      else:
        name = "entity" if task == "entities" else "slot"
        summary[f"{name}_micro_f1_{key}"] = scores["exact"]["micro"]["f1"]
        summary[f"{name}_micro_f1_overlap_{key}"] = scores["overlap"]["micro"]["f1"]
      if progress:
        logging.info("extraction %s %s: %d sentences in %.1f s", key, task, len(chosen[task]),
                     scores["wall_s"])
  out.update(summary=summary, truncated_prompts=truncated, wall_s=time.time() - start)
  return out
