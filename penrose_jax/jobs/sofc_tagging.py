"""The `sofc_tagging` job: SOFC-Exp entity and slot extraction as BIO tagging.

Stages: read the experiment sentences of the train and eval splits (annotation word tokens and
BIO tags); load the model ('default', 'tiny', a file or a checkpoint folder, compressed ones
included); tokenize word by word (every word starts a subword; its first subword carries the
tag); fine-tune backbone and tagging head (models/token_tagger.py) with AdamW, one learning rate
for the backbone and one for the head, on length-bucketed batches (a few shapes to compile),
resumable through training/loop.py; after every epoch tag all eval sentences (BIO-constrained
Viterbi) and score exact-span micro / macro F1 (evaluation/sofc_bio.py); keep the best epoch on
the mean of entity and slot micro F1 (model selection on dev). Writes DIR/report.json (with the
results `row` in the sofc_extraction row format), DIR/results.json, DIR/dev_scores/epoch_N.json
and checkpoints under DIR/train/checkpoints (the best epoch's is kept).

A missing data root is not an error: the report says the data is missing under `skipped`.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from tqdm import tqdm

from penrose_jax.data import paths
from penrose_jax.evaluation import sofc_annotations, sofc_bio
from penrose_jax.io import model_registry
from penrose_jax.models import linear, llama, token_tagger
from penrose_jax.reporting import report_json
from penrose_jax.training import loop, optimizer, train_state, trainable


@dataclasses.dataclass(frozen=True)
class Encoded:
  """One sentence ready for the tagger.

  Attributes:
    sentence: the annotated sentence.
    ids: token ids (BOS first when the model has one), truncated to the longest bucket.
    first: per word, the index of its first subword in `ids`, or -1 when truncated away.
    entity_tags: per word, entity tag ids.
    slot_tags: per word, slot tag ids.
  """

  sentence: sofc_annotations.Sentence
  ids: np.ndarray
  first: np.ndarray
  entity_tags: np.ndarray
  slot_tags: np.ndarray


def experiment_sentences(root: pathlib.Path, split: str, max_articles: int, max_sentences: int
                         ) -> list[sofc_annotations.Sentence]:
  """The annotated experiment sentences of a split, in article and file order.

  Args:
    root: the SOFC-Exp data root.
    split: 'train' or 'dev'.
    max_articles: first N articles (0 = all).
    max_sentences: first N sentences (0 = all).

  Returns:
    Sentences that carry word tokens.
  """
  articles = sofc_annotations.load_articles(root, split, max_articles=max_articles)
  out = [s for a in articles for s in a.sentences if s.is_experiment and s.words]
  return out[:max_sentences] if max_sentences > 0 else out


def encode_sentences(sentences: list[sofc_annotations.Sentence], tokenizer: Any,
                     max_tokens: int) -> list[Encoded]:
  """Aligns words to subwords and builds per-word tags.

  Args:
    sentences: experiment sentences.
    tokenizer: TextTokenizer.
    max_tokens: the longest sequence kept (longer ones are cut; their last words then count as
      predicted O at evaluation).

  Returns:
    Encoded sentences.
  """
  bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id >= 0 else []
  out = []
  for s in sentences:
    ids, first = sofc_bio.align_words(s.text, s.words, tokenizer.encode)
    ids = np.asarray(bos + ids, np.int32)[:max_tokens]
    first = np.asarray([f + len(bos) if f + len(bos) < max_tokens else -1 for f in first])
    out.append(Encoded(s, ids, first,
                       np.asarray(sofc_bio.word_tags(s, s.entities, sofc_bio.ENTITY_LABELS)),
                       np.asarray(sofc_bio.word_tags(s, s.slots, sofc_bio.SLOT_LABELS))))
  return out


def bucket_batches(items: list[Encoded], buckets: list[int], batch_tokens: int,
                   rng: np.random.Generator | None) -> list[tuple[int, list[int]]]:
  """Groups sentence indices into batches of one bucket length each.

  Args:
    items: encoded sentences.
    buckets: ascending padded lengths; a sentence goes to the shortest that holds it.
    batch_tokens: rows per batch = max(1, batch_tokens // bucket length).
    rng: shuffles within buckets and the batch order (None = keep order, for evaluation).

  Returns:
    (bucket length, indices) per batch; indices may be fewer than the rows (padding rows).
  """
  by_bucket: dict[int, list[int]] = {b: [] for b in buckets}
  for index, item in enumerate(items):
    length = next((b for b in buckets if b >= len(item.ids)), buckets[-1])
    by_bucket[length].append(index)
  batches = []
  for length, indices in by_bucket.items():
    if rng is not None:
      indices = list(rng.permutation(indices))
    rows = max(1, batch_tokens // length)
    batches += [(length, indices[i:i + rows]) for i in range(0, len(indices), rows)]
  if rng is not None:
    batches = [batches[i] for i in rng.permutation(len(batches))]
  return batches


def make_batch(items: list[Encoded], length: int, indices: list[int], rows: int
               ) -> dict[str, np.ndarray]:
  """Right-padded tokens, validity and per-token targets of a batch (padding rows: all IGNORE).

  Args:
    items: encoded sentences.
    length: padded length.
    indices: the batch's sentences.
    rows: batch rows (fixed per bucket, so each bucket compiles once).

  Returns:
    {'tokens', 'valid', 'entity_targets', 'slot_targets'}.
  """
  tokens = np.zeros((rows, length), np.int32)
  valid = np.zeros((rows, length), bool)
  ent = np.full((rows, length), sofc_bio.IGNORE, np.int32)
  slot = np.full((rows, length), sofc_bio.IGNORE, np.int32)
  for row, index in enumerate(indices):
    item = items[index]
    n = min(len(item.ids), length)
    tokens[row, :n] = item.ids[:n]
    valid[row, :n] = True
    keep = (item.first >= 0) & (item.first < length)
    ent[row, item.first[keep]] = item.entity_tags[keep]
    slot[row, item.first[keep]] = item.slot_tags[keep]
  return {"tokens": tokens, "valid": valid, "entity_targets": ent, "slot_targets": slot}


def _tagger(config: ml_collections.ConfigDict, model_config: Any) -> token_tagger.TokenTagger:
  return token_tagger.TokenTagger(sofc_bio.ENTITY_LABELS.size, sofc_bio.SLOT_LABELS.size,
                                  context_layers=int(config.context_layers),
                                  num_heads=model_config.num_heads)


def _logits(tagger, model_config, params, tokens, valid):
  hidden = token_tagger.final_hidden_states(params["model"], tokens, model_config)
  return tagger.apply({"params": params["head"]}, hidden, valid)


def _loss(tagger, model_config, params, batch, rng, constants):
  del rng, constants
  ent_logits, slot_logits = _logits(tagger, model_config, params, batch["tokens"],
                                    batch["valid"])
  ent_loss, words = token_tagger.masked_cross_entropy(ent_logits, batch["entity_targets"])
  slot_loss, _ = token_tagger.masked_cross_entropy(slot_logits, batch["slot_targets"])
  return ent_loss + slot_loss, {"entity_loss": ent_loss, "slot_loss": slot_loss, "words": words}


def tag_sentences(predict: Any, params: Any, items: list[Encoded], buckets: list[int],
                  batch_tokens: int, progress: bool = False) -> tuple[list, list]:
  """Entity and slot spans of every sentence (BIO-constrained Viterbi over its words).

  Args:
    predict: jitted (params, tokens, valid) -> (entity, slot) log-probabilities.
    params: {'model', 'head'}.
    items: encoded sentences.
    buckets: padded lengths.
    batch_tokens: tokens per batch.
    progress: show a tqdm bar.

  Returns:
    (entity spans, slot spans) per sentence, (label, start, end) triples.
  """
  entities: list = [None] * len(items)
  slots: list = [None] * len(items)
  for length, indices in tqdm(bucket_batches(items, buckets, batch_tokens, None),
                              desc="tag dev", disable=not progress, leave=False):
    batch = make_batch(items, length, indices, max(1, batch_tokens // length))
    ent_lp, slot_lp = jax.device_get(predict(params, batch["tokens"], batch["valid"]))
    for row, index in enumerate(indices):
      item = items[index]
      for scores, labels, out in ((ent_lp[row], sofc_bio.ENTITY_LABELS, entities),
                                  (slot_lp[row], sofc_bio.SLOT_LABELS, slots)):
        # Words cut off by truncation score 'O' with certainty.
        word_scores = np.full((len(item.first), labels.size), -1e9)
        word_scores[:, 0] = 0.0
        kept = item.first >= 0
        word_scores[kept] = scores[item.first[kept]]
        tags = sofc_bio.viterbi(word_scores, labels)
        out[index] = sofc_bio.tags_to_spans(tags, item.sentence.words, labels)
  return entities, slots


def score_spans(items: list[Encoded], entities: list, slots: list) -> dict[str, Any]:
  """Entity and slot exact-span scores (sofc_bio.span_f1) of predictions on `items`."""
  return {"entities": sofc_bio.span_f1([i.sentence.entities for i in items], entities,
                                       sofc_bio.ENTITY_LABELS.types),
          "slots": sofc_bio.span_f1([i.sentence.slots for i in items], slots,
                                    sofc_bio.SLOT_LABELS.types)}


def _optimizer(config: ml_collections.ConfigDict, total_steps: int):
  """AdamW per part: backbone ('model') and head learning rates differ."""
  def part(lr):
    return dict(learning_rate=float(lr), warmup_steps=int(config.warmup_steps),
                total_steps=total_steps, weight_decay=float(config.weight_decay),
                clip_norm=float(config.clip_norm), end_lr_fraction=0.1)
  parts = {"model": part(config.backbone_learning_rate), "head": part(config.head_learning_rate)}
  labels = lambda tree: {k: jax.tree_util.tree_map(lambda _, k=k: k, v) for k, v in tree.items()}
  opt = optax.multi_transform({k: optimizer.make_optimizer(v) for k, v in parts.items()}, labels)
  return opt, optimizer.make_schedule(parts["model"])


def _row(config, loaded, best: dict, dev_count: int, train_count: int, train_s: float,
         eval_s: float, wall_s: float, training: dict) -> dict[str, Any]:
  """The results row in the sofc_extraction row format (scores.*, sentences per task)."""
  kind = "compressed" if any(linear.is_compressed(x) for x in jax.tree_util.tree_leaves(
      loaded.params, is_leaf=linear.is_compressed)) else "dense"
  scores = {"entity_micro_f1": best["entities"]["micro_f1"],
            "entity_macro_f1": best["entities"]["macro_f1"],
            "slot_micro_f1": best["slots"]["micro_f1"],
            "slot_macro_f1": best["slots"]["macro_f1"]}
  per_type = {}
  for task, prefix in (("entities", "entity"), ("slots", "slot")):
    for label, prf in best[task]["per_type"].items():
      per_type[f"{prefix}_f1_{label}"] = prf["f1"]
  return {"name": config.row_name or f"tagging {kind}", "method": "tagging", "kind": kind,
          "model": config.model, "split": config.eval_split, "scores": scores,
          "per_type_f1": per_type,
          "sentences": {"entities": dev_count, "slots": dev_count, "train": train_count},
          "train_s": round(train_s, 1), "eval_s": round(eval_s, 1), "wall_s": round(wall_s, 1),
          "training": training}


def run(config: ml_collections.ConfigDict, workdir: str | pathlib.Path) -> dict[str, Any]:
  """Fine-tunes a tagger on the train split, picks the best epoch on the eval split.

  Args:
    config: see configs/sofc_tagging.py.
    workdir: output folder (created; a rerun resumes its training).

  Returns:
    The report dict (also DIR/report.json).
  """
  start = time.time()
  workdir = pathlib.Path(workdir)
  workdir.mkdir(parents=True, exist_ok=True)
  root = paths.resolve_data_path(config.data_root)
  if not (root / "metadata.tsv").is_file():
    message = (f"SOFC-Exp data missing: {root / 'metadata.tsv'} not found (config data_root "
               f"{config.data_root!r}; ../shared paths follow PENROSE_SHARED_DIR)")
    logging.warning("sofc_tagging: %s", message)
    report = report_json.build_report("sofc_tagging", config, config.model, time.time() - start,
                                      {"skipped": [message]})
    report_json.write_json_atomic(workdir / "report.json", report)
    return report
  buckets = sorted(int(b) for b in str(config.bucket_lengths).split(","))
  train_sents = experiment_sentences(root, config.train_split, config.max_articles,
                                     config.max_sentences)
  dev_sents = experiment_sentences(root, config.eval_split, config.max_articles,
                                   config.max_sentences)
  if not train_sents or not dev_sents:
    raise ValueError(f"sofc_tagging: {root} has {len(train_sents)} {config.train_split} and "
                     f"{len(dev_sents)} {config.eval_split} experiment sentences with word "
                     "tokens; both must be non-empty")
  loaded = model_registry.load(config.model, cache_dir=workdir / "model_cache")
  train_items = encode_sentences(train_sents, loaded.tokenizer, buckets[-1])
  dev_items = encode_sentences(dev_sents, loaded.tokenizer, buckets[-1])
  tagger = _tagger(config, loaded.config)
  # One jitted init: eager Flax init compiles every small op on its own (seconds each on CPU).
  head = jax.jit(tagger.init)(jax.random.PRNGKey(config.seed),
                              jnp.zeros((1, buckets[0], loaded.config.hidden_size), jnp.float32),
                              jnp.ones((1, buckets[0]), bool))["params"]
  backbone = llama.stack_layers(loaded.params) if config.stack_layers else loaded.params
  params = {"model": backbone, "head": head}
  mask = {"model": trainable.trainable_mask(backbone, config.trainable),
          "head": trainable.trainable_mask(head, "all")}
  steps_per_epoch = len(bucket_batches(train_items, buckets, config.batch_tokens, None))
  total_steps = steps_per_epoch * int(config.epochs)
  opt, schedule = _optimizer(config, total_steps)
  state = train_state.init_train_state(params, opt, mask, seed=config.seed)
  step = train_state.make_train_step(functools.partial(_loss, tagger, loaded.config), opt, mask,
                                     schedule=schedule)

  @functools.lru_cache(maxsize=2)
  def epoch_plan(epoch: int):
    return bucket_batches(train_items, buckets, config.batch_tokens,
                          np.random.default_rng([config.seed, epoch]))

  last_batch = [-1]  # index of the batch of the latest update: the epoch an eval belongs to

  def batch_fn(i: int):
    last_batch[0] = i
    length, indices = epoch_plan(i // steps_per_epoch)[i % steps_per_epoch]
    return make_batch(train_items, length, indices, max(1, config.batch_tokens // length))

  predict = jax.jit(lambda p, t, v: tuple(
      jax.nn.log_softmax(x, axis=-1) for x in _logits(tagger, loaded.config, p, t, v)))
  scores_dir = workdir / "dev_scores"
  eval_seconds = [0.0]

  def eval_fn(current):
    t0 = time.time()
    entities, slots = tag_sentences(predict, current, dev_items, buckets, config.batch_tokens,
                                    progress=config.progress)
    scores = score_spans(dev_items, entities, slots)
    seconds = time.time() - t0
    eval_seconds[0] += seconds
    epoch = (last_batch[0] + 1) // steps_per_epoch
    report_json.write_json_atomic(scores_dir / f"epoch_{epoch}.json",
                                  {"epoch": epoch, "eval_s": seconds, **scores})
    logging.info("epoch %d: entity F1 %.3f, slot F1 %.3f", epoch,
                 scores["entities"]["micro_f1"], scores["slots"]["micro_f1"])
    micro = (scores["entities"]["micro_f1"], scores["slots"]["micro_f1"])
    return {"entity_micro_f1": micro[0], "slot_micro_f1": micro[1],
            "selection_score": float(np.mean(micro)), "eval_s": seconds}

  t_train = time.time()
  result = loop.run_training(
      state, step, batch_fn, total_steps, str(workdir / "train"), eval_fn=eval_fn,
      eval_every=steps_per_epoch, checkpoint_every=0, max_to_keep=1,
      best_metric="selection_score", best_mode="max", progress=config.progress,
      tokens_in_batch=lambda b: int(np.sum(b["valid"])))
  train_s = time.time() - t_train - eval_seconds[0]
  epochs = [json.loads((scores_dir / f"epoch_{e}.json").read_text(encoding="utf-8"))
            for e in range(1, int(config.epochs) + 1)
            if (scores_dir / f"epoch_{e}.json").is_file()]
  best = max(epochs, key=lambda e: (np.mean([e["entities"]["micro_f1"],
                                             e["slots"]["micro_f1"]]), -e["epoch"]))
  training = {"epochs": int(config.epochs), "best_epoch": best["epoch"],
              "steps": result.final_step, "steps_per_epoch": steps_per_epoch,
              "train_tokens": result.train_tokens,
              "tokens_per_s": round(result.tokens_per_s, 1),
              "tokens_per_s_steady": round(result.tokens_per_s_steady, 1),
              "backbone_learning_rate": config.backbone_learning_rate,
              "head_learning_rate": config.head_learning_rate, "trainable": config.trainable,
              "trainable_params": trainable.count_elements(trainable.partition(
                  params, mask)[0]),
              "context_layers": int(config.context_layers),
              "final_loss": result.last_metrics.get("loss")}
  eval_s = float(np.mean([e["eval_s"] for e in epochs]))
  row = _row(config, loaded, best, len(dev_items), len(train_items), train_s, eval_s,
             time.time() - start, training)
  metrics = {"row": row, "best_epoch": best["epoch"], "dev": {k: best[k] for k in
                                                              ("entities", "slots")},
             "epochs": [{"epoch": e["epoch"], "entity_micro_f1": e["entities"]["micro_f1"],
                         "slot_micro_f1": e["slots"]["micro_f1"], "eval_s": e["eval_s"]}
                        for e in epochs],
             "train_s": train_s, "eval_s_per_epoch": eval_s, "skipped": []}
  report = report_json.build_report("sofc_tagging", config, loaded.name, time.time() - start,
                                    metrics)
  report_json.write_json_atomic(workdir / "report.json", report)
  report_json.write_json_atomic(workdir / "results.json", {"rows": [row]})
  return report
