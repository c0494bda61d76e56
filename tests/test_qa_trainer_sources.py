"""Q&A sources for training: model replies parsed + support-filtered, mixing, resumable shards."""

import types

from penrose_jax.data import demo_corpus, ingest
from penrose_jax.models import generation
from penrose_jax.qa import filtering, model_generate, records


class _FakeTokenizer:
  """Chat template + char-level encode/decode, enough for the model source."""
  stop_token_ids = (0,)

  def apply_chat_template(self, messages, add_generation_prompt=True):
    return "".join(m["content"] for m in messages)

  def encode(self, text):
    return [ord(c) % 256 + 1 for c in text]

  def decode(self, ids):
    return "".join(chr(i) for i in ids)


def _documents(n=2):
  documents, _ = ingest.load_corpus(demo_corpus.demo_corpus_dir())
  return documents[:n]


def test_model_source_keeps_supported_and_counts_rejections(monkeypatch, tmp_path):
  documents = _documents(1)
  section = documents[0].sections[0]
  word = section.text.split()[3].strip(".,;:()")
  reply = (f"Q: Which word appears in the section?\nA: {word}\nReasoning: The section says so.\n\n"
           "Q: What is the price of tea?\nA: 42 dollars\nReasoning: invented.\n")
  monkeypatch.setattr(generation, "generate_batch",
                      lambda params, config, prompts, *a, **k: [[ord(c) for c in reply]
                                                               for _ in prompts])
  model = types.SimpleNamespace(params=None, config=None, tokenizer=_FakeTokenizer())
  kept, rejected, raw = model_generate.generate_model_section_qa(
      None, None, model.tokenizer, section, documents[0].title, model_generate.ModelQASettings())
  assert raw == reply
  assert [p.answer for p in kept] == [word] and [p.answer for p in rejected] == ["42 dollars"]
  assert kept[0].source == "model" and kept[0].section_order == section.order

  out = tmp_path / "qa_pairs.jsonl"
  info = model_generate.build_qa_pairs(documents, out, ["model", "rule", "curated"], model=model,
                                       curated_path=demo_corpus.demo_curated_path())
  pairs, bad = model_generate.read_all_pairs(out)
  stats = model_generate.qa_statistics(documents, pairs, bad)
  n_sections = len(documents[0].sections)
  assert stats["model_pairs_generated"] == 2 * n_sections
  supported = sum(filtering.answer_supported(word, s.text) for s in documents[0].sections)
  assert supported >= 1
  assert stats["filter_rejection_rate"] == (2 * n_sections - supported) / (2 * n_sections)
  assert stats["qa_pairs_by_source"]["model"] == supported
  assert stats["qa_pairs_by_source"]["rule"] > 0 and stats["qa_pairs_by_source"]["curated"] > 0
  assert info["documents_written"] == 1
  # A rerun resumes: nothing is regenerated or duplicated.
  again = model_generate.build_qa_pairs(documents, out, ["model", "rule", "curated"], model=model,
                                        curated_path=demo_corpus.demo_curated_path())
  assert again["documents_skipped"] == 1 and again["documents_written"] == 0
  assert len(model_generate.read_all_pairs(out)[0]) == len(pairs)


def test_sharded_by_document_over_processes(tmp_path):
  documents = _documents(3)
  out = tmp_path / "qa.jsonl"
  for index in range(2):
    model_generate.build_qa_pairs(documents, out, ["rule"], process_index=index, process_count=2)
  shard0 = records.read_qa_jsonl(records.shard_output_path(out, 0, 2))
  shard1 = records.read_qa_jsonl(records.shard_output_path(out, 1, 2))
  assert {p.doc_id for p in shard0}.isdisjoint({p.doc_id for p in shard1})
  pairs, _ = model_generate.read_all_pairs(out, process_count=2)
  assert {p.doc_id for p in pairs} == {d.doc_id for d in documents}
