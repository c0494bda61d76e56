"""Data paths and the perplexity text sets that several job configs share.

One name per text set across compress, align, evaluate and the pipeline, so a report key such as
`ppl_compressed_by_set.sofc_dev` means the same text in every job: `sofc_dev` is always the
SOFC-Exp dev split, `sofc_all` (the evaluate job's default) all its articles.
"""

import ml_collections

# SOFC-Exp article texts (../shared); '@dev' / '@train' select a split (data/text_sources.py).
SOFC_TEXTS = "../shared/data/sofc_exp/texts"
SOFC_DEV = f"{SOFC_TEXTS}@dev"
SOFC_TRAIN = f"{SOFC_TEXTS}@train"
LAMBADA = "../shared/data/general_eval/lambada_openai.jsonl"
DEMO_CORPUS = "package:demo_corpus"
GENERAL_TEXT = "package:general_text"

# Every perplexity text set a job config may name: name -> text source spec.
TEXT_SETS = {"sofc_dev": SOFC_DEV, "sofc_all": SOFC_TEXTS, "lambada": LAMBADA,
             "demo_corpus": DEMO_CORPUS, "general_text": GENERAL_TEXT}


def text_sets(*names: str) -> ml_collections.ConfigDict:
  """The eval section's `text_sets` for the named sets, in that order.

  Args:
    *names: keys of TEXT_SETS.

  Returns:
    name -> source spec.

  Raises:
    KeyError: an unknown name.
  """
  return ml_collections.ConfigDict({name: TEXT_SETS[name] for name in names})
