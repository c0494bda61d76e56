"""Training Q&A from three mixable sources, streamed to a resumable, document-sharded JSONL.

Sources:
  * 'model': the instruct model reads one section (`prompts.build_qa_generation_prompt` in its
    chat template), generates greedily (`generation.generate_batch`: a document's sections
    decoded together, each reply equal to one-by-one greedy decoding), the reply is parsed with
    `prompts.parse_generated_qa`, and a pair is kept only when `filtering.answer_supported`
    accepts its answer against the section text. The rule (filtering.py): after NFKC / lower
    case / dash and thousands-separator normalisation and light plural stripping, the answer
    needs >= 1 content (non-stopword) token, >= 60 % of its content tokens must occur in the
    section, and every number in it must occur in the section. Rejected pairs go to
    `<output>.rejected.jsonl`, so the rejection rate survives a resume.
  * 'rule': `generate_rules.generate_section_qa` (definitions, numeric facts, cloze).
  * 'curated': a curated JSONL (`curated.load_curated_qa`), matched to sections by title.
  * 'sofc_tasks': SOFC-Exp extraction tasks of train-split articles (`sofc_source.py`).
  * 'study': `study_material.generate_section_study` (every fact in several wordings); its
    restatements and entity notes stream to `study_material.texts_path(output)`.
  * 'recall': `fact_recall.generate_section_recall` (every short-answer fact restated >= 10
    times under the document's entity, short-answer Q&A); its texts join the study texts, its
    self-test questions stream to `fact_recall.selftest_path(output)` and their held-out
    wordings are removed from every source's training pairs.
All pairs are de-duplicated per document (`filtering.dedupe_qa`, first kept, source order
curated, model, rule, sofc_tasks).

Streaming: documents are sharded round-robin by doc_id over jax.process_index() /
process_count(); each process writes `records.shard_output_path(output, i, n)` through a
`ResumableJsonlWriter`, one fsynced block per document, so a killed run skips finished
documents when restarted.
"""

from __future__ import annotations

import dataclasses
import pathlib
from typing import Any, Optional, Sequence

import jax

from penrose_jax.data.ingest import Document, Section
from penrose_jax.models import generation
from penrose_jax.models.config import ModelConfig
from penrose_jax.qa import curated, filtering, generate_rules, prompts, records, sofc_source
from penrose_jax.qa import fact_recall, study_material
from penrose_jax.qa.records import QAPair

SOURCE_ORDER = ("curated", "model", "rule", "sofc_tasks", "study", "recall")


@dataclasses.dataclass
class ModelQASettings:
  """How the model source generates.

  Attributes:
    num_questions: pairs asked for per section.
    max_new_tokens: generation budget per section.
    max_prompt_tokens: sections whose prompt is longer are cut (text from the right).
    min_token_fraction: see filtering.answer_supported.
    batch_size: sections decoded together.
  """

  num_questions: int = 4
  max_new_tokens: int = 256
  max_prompt_tokens: int = 1536
  min_token_fraction: float = 0.6
  batch_size: int = 8


def generate_model_section_qa(params: Any, model_config: ModelConfig, tokenizer: Any,
                              section: Section, doc_title: str, settings: ModelQASettings
                              ) -> tuple[list[QAPair], list[QAPair], str]:
  """Model-generated, support-filtered pairs of one section.

  Args:
    params: params pytree.
    model_config: the architecture.
    tokenizer: a TextTokenizer with a chat template.
    section: the section.
    doc_title: the document title.
    settings: ModelQASettings.

  Returns:
    (kept, rejected, raw reply).
  """
  return generate_model_sections_qa(params, model_config, tokenizer, [section], doc_title,
                                    settings)[0]


def _section_prompt_ids(tokenizer: Any, section: Section, doc_title: str,
                        settings: ModelQASettings) -> list[int]:
  """The generation prompt of one section, its text cut until it fits max_prompt_tokens."""
  text = section.text
  while True:
    messages = prompts.build_qa_generation_prompt(
        dataclasses.replace(section, text=text), settings.num_questions, doc_title)
    ids = tokenizer.encode(tokenizer.apply_chat_template(messages, add_generation_prompt=True))
    if len(ids) <= settings.max_prompt_tokens or len(text) < 200:
      return ids
    text = text[:int(len(text) * settings.max_prompt_tokens / len(ids) * 0.95)]


def generate_model_sections_qa(params: Any, model_config: ModelConfig, tokenizer: Any,
                               sections: Sequence[Section], doc_title: str,
                               settings: ModelQASettings
                               ) -> list[tuple[list[QAPair], list[QAPair], str]]:
  """`generate_model_section_qa` for several sections, decoded settings.batch_size at a time.

  Args:
    params: params pytree.
    model_config: the architecture.
    tokenizer: a TextTokenizer with a chat template.
    sections: the sections (of one document).
    doc_title: the document title.
    settings: ModelQASettings.

  Returns:
    (kept, rejected, raw reply) per section, in section order.
  """
  ids = [_section_prompt_ids(tokenizer, s, doc_title, settings) for s in sections]
  outs = generation.generate_batch(params, model_config, ids, settings.max_new_tokens,
                                   stop_token_ids=tokenizer.stop_token_ids,
                                   batch_size=settings.batch_size)
  results = []
  for section, out in zip(sections, outs):
    reply = tokenizer.decode(out)
    kept, rejected = [], []
    for question, answer, reasoning in prompts.parse_generated_qa(reply):
      pair = QAPair(section.doc_id, section.title, section.order, question, answer, reasoning,
                    "model")
      ok = filtering.answer_supported(answer, section.text, settings.min_token_fraction)
      (kept if ok else rejected).append(pair)
    results.append((kept, rejected, reply))
  return results


def load_curated_for(path: Optional[str | pathlib.Path], documents: Sequence[Document]
                     ) -> tuple[dict[str, list[QAPair]], list[str]]:
  """Curated pairs of the given documents, with section orders filled in.

  Lines naming other documents are ignored; lines naming an unknown section of a loaded
  document are dropped with a note.

  Args:
    path: curated JSONL (None/'' or missing = none).
    documents: the corpus.

  Returns:
    ({doc_id: pairs}, notes).
  """
  if not path or not pathlib.Path(path).is_file():
    return {}, ([f"curated Q&A {path} not found"] if path else [])
  orders = {(d.doc_id, s.title.lower()): s.order for d in documents for s in d.sections}
  doc_ids = {d.doc_id for d in documents}
  out: dict[str, list[QAPair]] = {}
  notes = []
  for pair in curated.load_curated_qa(path):
    if pair.doc_id not in doc_ids:
      continue
    order = orders.get((pair.doc_id, pair.section.lower()))
    if order is None:
      notes.append(f"curated pair for unknown section {pair.doc_id}/{pair.section} dropped")
      continue
    out.setdefault(pair.doc_id, []).append(
        dataclasses.replace(pair, section_order=order, qa_id=""))
  return out, notes


def build_qa_pairs(documents: Sequence[Document], output_path: str | pathlib.Path,
                   sources: Sequence[str], *, model: Any = None,
                   curated_path: Optional[str | pathlib.Path] = None,
                   settings: Optional[ModelQASettings] = None, max_facts_per_kind: int = 4,
                   sofc: Optional[sofc_source.SofcTaskSettings] = None,
                   process_index: Optional[int] = None, process_count: Optional[int] = None,
                   log: Any = None, study_variants: int = 4, study_max_facts: int = 0
                   ) -> dict[str, Any]:
  """Generates and streams the training Q&A of this process's documents (resumable).

  Args:
    documents: the corpus.
    output_path: qa_pairs.jsonl (sharded name when process_count > 1).
    sources: subset of ('rule', 'curated', 'model', 'sofc_tasks').
    model: a model_registry.Loaded, needed for 'model'.
    curated_path: curated JSONL for 'curated'.
    settings: ModelQASettings for 'model'.
    max_facts_per_kind: rule-source cap.
    sofc: SofcTaskSettings for 'sofc_tasks' (None = defaults).
    process_index: defaults to jax.process_index().
    process_count: defaults to jax.process_count().
    log: optional callable(str) for progress lines.
    study_variants: 'study' source: questions per fact.
    study_max_facts: 'study' source: facts per section (0 = all).

  Returns:
    {'paths': written shard path(s), 'documents_written', 'documents_skipped', 'notes'}.
  """
  unknown = set(sources) - set(records.QA_SOURCES)
  if unknown:
    raise ValueError(f"unknown Q&A sources {sorted(unknown)}; known: {records.QA_SOURCES}")
  if "model" in sources and model is None:
    raise ValueError("the 'model' Q&A source needs a loaded model")
  settings = settings or ModelQASettings()
  index = jax.process_index() if process_index is None else process_index
  count = jax.process_count() if process_count is None else process_count
  path = records.shard_output_path(output_path, index, count)
  writer = records.ResumableJsonlWriter(path)
  rejected_writer = records.ResumableJsonlWriter(path.with_name(path.stem + ".rejected.jsonl"))
  study_writer = (records.ResumableJsonlWriter(study_material.texts_path(path))
                  if {"study", "recall"} & set(sources) else None)
  selftest_writer = (records.ResumableJsonlWriter(fact_recall.selftest_path(path))
                     if "recall" in sources else None)
  curated_pairs, notes = (load_curated_for(curated_path, documents) if "curated" in sources
                          else ({}, []))
  sofc_pairs, sofc_notes = (
      sofc_source.sofc_task_pairs(documents, sofc or sofc_source.SofcTaskSettings())
      if "sofc_tasks" in sources else ({}, []))
  notes = notes + sofc_notes
  written = skipped = 0
  for document in records.shard_items(documents, index, count):
    if writer.is_done(document.doc_id):
      skipped += 1
      continue
    by_source: dict[str, list[QAPair]] = {s: [] for s in SOURCE_ORDER}
    rejected: list[QAPair] = []
    study_texts: list[study_material.StudyText] = []
    selftest: list[fact_recall.SelfTestQuestion] = []
    entity = fact_recall.document_entity(document) if "recall" in sources else ""
    by_source["curated"] = curated_pairs.get(document.doc_id, [])
    by_source["sofc_tasks"] = sofc_pairs.get(document.doc_id, [])
    generated = (generate_model_sections_qa(model.params, model.config, model.tokenizer,
                                            document.sections, document.title, settings)
                 if "model" in sources else [])
    for section_index, section in enumerate(document.sections):
      if generated:
        kept, bad, _ = generated[section_index]
        by_source["model"].extend(kept)
        rejected.extend(bad)
      if "rule" in sources:
        by_source["rule"].extend(generate_rules.generate_section_qa(
            section, document.title, max_facts_per_kind))
      if "study" in sources:
        material = study_material.generate_section_study(section, document.title,
                                                         study_variants, study_max_facts)
        by_source["study"].extend(material.pairs)
        study_texts.extend(material.texts)
      if "recall" in sources:
        recall = fact_recall.generate_section_recall(section, entity, document.title)
        by_source["recall"].extend(recall.pairs)
        study_texts.extend(recall.texts)
        selftest.extend(recall.selftest)
    pairs = filtering.dedupe_qa([p for s in SOURCE_ORDER for p in by_source[s]])
    # The self-test's held-out wordings are never trained, whichever source would ask them.
    heldout = {filtering.question_key(q.question) for q in selftest if q.split == "heldout"}
    pairs = [p for p in pairs if filtering.question_key(p.question) not in heldout]
    pairs.sort(key=lambda p: p.section_order)  # stable: source order kept within a section
    if not rejected_writer.is_done(document.doc_id):
      rejected_writer.write_document(document.doc_id, rejected)
    if study_writer is not None and not study_writer.is_done(document.doc_id):
      study_writer.write_document(document.doc_id, study_texts)
    if selftest_writer is not None and not selftest_writer.is_done(document.doc_id):
      selftest_writer.write_document(document.doc_id, selftest)
    writer.write_document(document.doc_id, pairs)
    written += 1
    if log:
      log(f"qa pairs {document.doc_id}: {len(pairs)} kept, {len(rejected)} model pairs rejected")
  return {"path": str(path), "documents_written": written, "documents_skipped": skipped,
          "notes": notes}


def read_all_pairs(output_path: str | pathlib.Path, process_count: Optional[int] = None
                   ) -> tuple[list[QAPair], list[QAPair]]:
  """Reads every process's shard (after all processes finished) and the rejected pairs.

  Args:
    output_path: the base qa_pairs.jsonl path.
    process_count: defaults to jax.process_count().

  Returns:
    (pairs, rejected model pairs).
  """
  count = jax.process_count() if process_count is None else process_count
  paths = [records.shard_output_path(output_path, i, count) for i in range(count)]
  rejected_paths = [p.with_name(p.stem + ".rejected.jsonl") for p in paths]
  return (records.read_qa_jsonl([p for p in paths if p.exists()]),
          records.read_qa_jsonl([p for p in rejected_paths if p.exists()]))


def qa_statistics(documents: Sequence[Document], pairs: Sequence[QAPair],
                  rejected: Sequence[QAPair]) -> dict[str, Any]:
  """Counts for the report: pairs by source, per section, and the filter rejection rate.

  Args:
    documents: the corpus.
    pairs: kept pairs.
    rejected: rejected model pairs.

  Returns:
    {'qa_pairs_by_source', 'qa_pairs_total', 'sections', 'sections_per_document',
    'pairs_per_section_by_source', 'model_pairs_generated', 'filter_rejection_rate'}.
  """
  n_sections = sum(len(d.sections) for d in documents)
  by_source = {s: sum(p.source == s for p in pairs) for s in records.QA_SOURCES}
  model_kept = by_source["model"]
  generated = model_kept + len(rejected)
  return {"qa_pairs_by_source": by_source, "qa_pairs_total": len(pairs),
          "sections": n_sections,
          "sections_per_document": {d.doc_id: len(d.sections) for d in documents},
          "pairs_per_section_by_source": {s: c / max(n_sections, 1) for s, c in by_source.items()},
          "model_pairs_generated": generated,
          "filter_rejection_rate": (len(rejected) / generated) if generated else None}
