"""SOFC-Exp tagging route: BIO labels, word -> subword alignment, Viterbi, spans, the tagging
head and the quick sofc_tagging job on hand-made annotation files."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from configs import sofc_tagging as tagging_config
from penrose_jax.evaluation import sofc_annotations, sofc_bio
from penrose_jax.io import model_registry
from penrose_jax.jobs import sofc_tagging
from penrose_jax.models import llama, token_tagger
from tests.test_evaluation_sofc import (BACKGROUND, DEV_EXP, TRAIN_EXP, _sentence_text,
                                       _write_article)

# A third experiment sentence with a slot the protocol maps to O.
EXTRA_EXP = [("The", "O", "O"), ("Crofer", "B-MATERIAL", "B-interconnect_material"),
             ("interconnect", "O", "O"), ("was", "O", "O"),
             ("operated", "B-EXPERIMENT", "B-experiment_evoking_word"), ("for", "O", "O"),
             ("500", "B-VALUE", "B-time_of_operation"), ("h", "I-VALUE", "I-time_of_operation"),
             (".", "O", "O")]


@pytest.fixture()
def tagging_root(tmp_path):
  """Train article PMC1 (3 experiment sentences), dev article PMC2 (2)."""
  root = tmp_path / "sofc_exp"
  _write_article(root, "PMC1", [(BACKGROUND, False, None),
                                (_sentence_text(TRAIN_EXP), True, TRAIN_EXP),
                                (_sentence_text(EXTRA_EXP), True, EXTRA_EXP),
                                (_sentence_text(DEV_EXP), True, DEV_EXP)])
  _write_article(root, "PMC2", [(_sentence_text(DEV_EXP), True, DEV_EXP),
                                (_sentence_text(TRAIN_EXP), True, TRAIN_EXP),
                                (BACKGROUND, False, None)])
  (root / "metadata.tsv").write_text("name\tset\nPMC1\ttrain\nPMC2\tdev\n")
  return root


def _experiment(root, split):
  return sofc_tagging.experiment_sentences(root, split, 0, 0)


def test_labels_follow_the_protocol():
  assert sofc_bio.ENTITY_LABELS.size == 9 and sofc_bio.ENTITY_LABELS.tags[:3] == (
      "O", "B-MATERIAL", "I-MATERIAL")
  assert "interconnect_material" not in sofc_bio.SLOT_TAG_TYPES
  assert "experiment_evoking_word" not in sofc_bio.SLOT_TAG_TYPES
  assert len(sofc_bio.SLOT_TAG_TYPES) == 17
  with pytest.raises(ValueError, match="not in the BIO vocabulary"):
    sofc_bio.ENTITY_LABELS.index("B-FOO")


def test_word_tags_map_protocol_slots_to_o(tagging_root):
  sentence = _experiment(tagging_root, "train")[1]
  assert sentence.text.startswith("The Crofer")
  slots = [sofc_bio.SLOT_LABELS.tags[t] for t in
           sofc_bio.word_tags(sentence, sentence.slots, sofc_bio.SLOT_LABELS)]
  assert slots == ["O"] * 6 + ["B-time_of_operation", "I-time_of_operation", "O"]
  entities = [sofc_bio.ENTITY_LABELS.tags[t] for t in
              sofc_bio.word_tags(sentence, sentence.entities, sofc_bio.ENTITY_LABELS)]
  assert entities == [e for _, e, _ in EXTRA_EXP]


def test_align_words_starts_every_word_on_a_subword(tagging_root, tiny_model_dir):
  tokenizer = model_registry.load(str(tiny_model_dir)).tokenizer
  for sentence in _experiment(tagging_root, "train"):
    ids, first = sofc_bio.align_words(sentence.text, sentence.words, tokenizer.encode)
    assert len(first) == len(sentence.words) and first == sorted(set(first))
    bounds = first + [len(ids)]
    for i, (start, end) in enumerate(sentence.words):
      # The word's subwords decode to the word (with the whitespace before it).
      assert tokenizer.decode(ids[bounds[i]:bounds[i + 1]]).strip() == sentence.text[start:end]
  # A character-level encoder makes the expected indices explicit.
  ids, first = sofc_bio.align_words("ab  c", [(0, 2), (4, 5)], lambda s: [ord(c) for c in s])
  assert first == [0, 2] and len(ids) == 5
  with pytest.raises(ValueError, match="out of order"):
    sofc_bio.align_words("ab c", [(3, 4), (0, 2)], lambda s: [1])


def test_token_targets_label_first_subwords_only():
  targets = sofc_bio.token_targets(6, [0, 2, 3], [1, 0, 2], offset=1)
  assert targets.tolist() == [-1, 1, -1, 0, 2, -1]


def test_viterbi_never_emits_an_orphan_inside_tag():
  labels = sofc_bio.ENTITY_LABELS
  allowed, first = sofc_bio.transition_mask(labels)
  rng = np.random.default_rng(0)
  for _ in range(200):
    scores = rng.normal(size=(int(rng.integers(1, 12)), labels.size)) * 3
    path = sofc_bio.viterbi(scores, labels)
    assert first[path[0]]
    for prev, nxt in zip(path, path[1:]):
      assert allowed[prev, nxt], (labels.tags[prev], labels.tags[nxt])
  # Argmax would say I-VALUE first and I-VALUE after B-MATERIAL; Viterbi picks valid tags.
  scores = np.full((2, labels.size), -5.0)
  scores[0, labels.index("I-VALUE")] = 0.0
  scores[0, labels.index("B-VALUE")] = -1.0
  scores[1, labels.index("I-VALUE")] = 0.0
  assert [labels.tags[t] for t in sofc_bio.viterbi(scores, labels)] == ["B-VALUE", "I-VALUE"]


def test_gold_tags_round_trip_to_gold_spans(tagging_root):
  sentences = _experiment(tagging_root, "train") + _experiment(tagging_root, "dev")
  for labels, gold_of in ((sofc_bio.ENTITY_LABELS, lambda s: s.entities),
                          (sofc_bio.SLOT_LABELS, lambda s: s.slots)):
    pred = [sofc_bio.tags_to_spans(sofc_bio.word_tags(s, gold_of(s), labels), s.words, labels)
            for s in sentences]
    scores = sofc_bio.span_f1([gold_of(s) for s in sentences], pred, labels.types)
    assert scores["micro_f1"] == 1.0 and scores["macro_f1"] == 1.0
    assert scores["micro"]["gold"] == sum(len(p) for p in pred) > 0
  assert sofc_bio.span_f1([sentences[0].entities], [[]],
                          sofc_bio.ENTITY_LABELS.types)["micro_f1"] == 0.0


def test_tags_to_spans_starts_a_span_at_an_orphan_inside_tag():
  labels = sofc_bio.ENTITY_LABELS
  tags = [labels.index(t) for t in ("I-VALUE", "I-VALUE", "B-MATERIAL", "I-VALUE")]
  words = [(0, 1), (2, 3), (4, 5), (6, 7)]
  assert sofc_bio.tags_to_spans(tags, words, labels) == [
      ("VALUE", 0, 3), ("MATERIAL", 4, 5), ("VALUE", 6, 7)]


def test_head_learns_a_labelling_that_needs_right_context():
  # Label of token t = sign of feature 0 of token t + 1: a causal view cannot see it, the
  # bidirectional block can.
  rng = np.random.default_rng(0)
  hidden = jnp.asarray(rng.normal(size=(16, 10, 32)), jnp.float32)
  valid = jnp.ones((16, 10), bool)
  targets = jnp.concatenate([(hidden[:, 1:, 0] > 0).astype(jnp.int32),
                             jnp.full((16, 1), -1, jnp.int32)], axis=1)
  tagger = token_tagger.TokenTagger(2, 3, context_layers=1, num_heads=4)
  params = tagger.init(jax.random.PRNGKey(0), hidden, valid)["params"]
  opt = optax.adam(3e-3)
  opt_state = opt.init(params)

  @jax.jit
  def step(params, opt_state):
    def loss_fn(p):
      logits, _ = tagger.apply({"params": p}, hidden, valid)
      return token_tagger.masked_cross_entropy(logits, targets)[0]
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = opt.update(grads, opt_state)
    return optax.apply_updates(params, updates), opt_state, loss

  losses = []
  for _ in range(150):
    params, opt_state, loss = step(params, opt_state)
    losses.append(float(loss))
  assert losses[-1] < 0.5 * losses[0], (losses[0], losses[-1])


def test_quick_job_end_to_end(tmp_path, tagging_root, tiny_model_dir):
  config = tagging_config.get_config("quick")
  config.model = str(tiny_model_dir)
  config.data_root = str(tagging_root)
  report = sofc_tagging.run(config, tmp_path / "out")
  row = report["row"]
  for key in ("entity_micro_f1", "entity_macro_f1", "slot_micro_f1", "slot_macro_f1"):
    assert 0.0 <= row["scores"][key] <= 1.0
  assert row["sentences"] == {"entities": 2, "slots": 2, "train": 3}
  assert row["kind"] == "dense" and row["train_s"] > 0 and row["eval_s"] > 0
  assert "entity_f1_MATERIAL" in row["per_type_f1"] and "slot_f1_device" in row["per_type_f1"]
  assert [e["epoch"] for e in report["epochs"]] == [1, 2]
  assert report["best_epoch"] in (1, 2)
  stored = json.loads((tmp_path / "out" / "results.json").read_text())
  assert stored["rows"][0]["name"] == "tagging dense"
  assert (tmp_path / "out" / "report.json").is_file()


def test_job_reports_missing_data(tmp_path, monkeypatch):
  monkeypatch.setenv("PENROSE_SHARED_DIR", str(tmp_path / "nonexistent"))
  config = tagging_config.get_config("quick")
  report = sofc_tagging.run(config, tmp_path / "out")
  assert "row" not in report
  assert "SOFC-Exp data missing" in report["skipped"][0]
  assert "metadata.tsv" in report["skipped"][0]


def test_stacked_and_per_layer_hidden_states_agree(tiny_model_dir):
  loaded = model_registry.load(str(tiny_model_dir))
  tokens = jnp.asarray(np.arange(24).reshape(2, 12) % loaded.config.vocab_size, jnp.int32)
  per_layer = token_tagger.final_hidden_states(loaded.params, tokens, loaded.config)
  stacked = token_tagger.final_hidden_states(llama.stack_layers(loaded.params), tokens,
                                             loaded.config)
  reference = llama.forward(loaded.params, tokens, loaded.config, return_hidden=True)
  np.testing.assert_allclose(per_layer, reference.final_hidden, atol=1e-5)
  np.testing.assert_allclose(stacked, per_layer, atol=1e-5)
