"""The chat format of closed-book Q&A: the prompt a question becomes and the completion taught.

Training rows (`qa.train_data`), scoring by log-likelihood (`evaluation.closed_book`,
`evaluation.answer_rank`) and greedy answers (`generation.chat`) must all see the same prompt,
so it is built in one place. It sits in models/ (below evaluation/ and qa/) because it needs
only a tokenizer's chat template, passed in as an argument.
"""

from __future__ import annotations

from typing import Any


def qa_messages(question: str) -> list[dict[str, str]]:
  """Chat messages of a closed-book question (the same ones `generation.chat` sends).

  Args:
    question: the question text.

  Returns:
    [{'role': 'user', 'content': question}].
  """
  return [{"role": "user", "content": question}]


def qa_prompt(tokenizer: Any, question: str) -> str:
  """The chat-template prompt (with generation prompt) of a question.

  Args:
    tokenizer: a TextTokenizer.
    question: the question.

  Returns:
    The prompt text.
  """
  return tokenizer.apply_chat_template(qa_messages(question), add_generation_prompt=True)


def qa_completion(answer: str, reasoning: str = "") -> str:
  """The assistant text the model is trained to produce.

  Args:
    answer: the short answer.
    reasoning: optional reasoning trace.

  Returns:
    'answer' or 'answer\\nReasoning: reasoning'.
  """
  return f"{answer}\nReasoning: {reasoning}" if reasoning else answer


def end_of_turn(tokenizer: Any) -> str:
  """The text the chat template puts after an assistant message (e.g. '<|im_end|>').

  Args:
    tokenizer: a TextTokenizer.

  Returns:
    The end-of-turn marker, stripped of trailing whitespace ('' if none is found).
  """
  probe = "\x00probe\x00"
  full = tokenizer.apply_chat_template(
      qa_messages("q") + [{"role": "assistant", "content": probe}], add_generation_prompt=False)
  index = full.rfind(probe)
  return full[index + len(probe):].rstrip() if index >= 0 else ""


def pad_id(tokenizer: Any) -> int:
  """The id Q&A rows are right-padded with.

  Args:
    tokenizer: a TextTokenizer.

  Returns:
    Its pad token id, else its end-of-sequence id.
  """
  pad = getattr(tokenizer, "pad_token_id", None)
  return int(pad if pad is not None else tokenizer.eos_token_id)


def first_answer_line(reply: str) -> str:
  """The short answer of a chat reply: its first line, before any 'Reasoning:' part.

  Args:
    reply: the decoded assistant reply.

  Returns:
    The answer text ('' for an empty reply).
  """
  reply = reply.split("Reasoning:")[0].strip()
  return reply.splitlines()[0].strip() if reply else ""
