"""Reader of the SOFC-Exp expert annotations (Friedrich et al., ACL 2020).

Layout of a data root (e.g. `../shared/data/sofc_exp`; always a config value):

  metadata.tsv                                  name, set (train/dev), ... (header row)
  texts/<doc>.txt                               full text, one sentence per line
  annotations/sentences/<doc>.csv               sentence_id, is_experiment (0/1), begin, end
                                                (character offsets into texts/<doc>.txt)
  annotations/entity_types_and_slots/<doc>.csv  sentence_id, token_id, begin, end, entity BIO,
                                                slot BIO (offsets relative to the sentence; rows
                                                exist for experiment sentences only)
  annotations/frames/<doc>.csv                  'SPAN id type sentence_id begin end',
                                                'EXPERIMENT id evoking_span_id' followed by
                                                '<tab>slot span_id' lines, 'LINK type span span'

All files are tab-separated without a header. Entity mentions and slot fillers come from the BIO
columns (the annotated reading of the corpus' NER and slot-filling tasks); an 'I-' tag that does
not continue a span of the same label starts a new one (the conlleval convention). Frames are
read as well (experiment -> slot -> mention texts). Every malformed row raises a ValueError that
names the file and its 1-based line number.
"""

from __future__ import annotations

import csv
import dataclasses
import pathlib
from typing import Iterable, Sequence

ENTITY_TYPES = ("MATERIAL", "VALUE", "DEVICE", "EXPERIMENT")
# The 18 slot types of experiment frames; `experiment_evoking_word` (the frame's trigger) is the
# EXPERIMENT entity, so it is not a slot to fill.
SLOT_TYPES = ("anode_material", "cathode_material", "conductivity", "current_density",
              "degradation_rate", "device", "electrolyte_material", "fuel_used",
              "interconnect_material", "interlayer_material", "open_circuit_voltage",
              "power_density", "resistance", "support_material", "thickness",
              "time_of_operation", "voltage", "working_temperature")
EVOKING_SLOT = "experiment_evoking_word"
SPLITS = ("train", "dev")


@dataclasses.dataclass(frozen=True)
class Mention:
  """A labelled span of one sentence.

  Attributes:
    label: entity type (ENTITY_TYPES) or slot name (SLOT_TYPES / EVOKING_SLOT).
    start: first character, relative to the sentence.
    end: one past the last character, relative to the sentence.
    text: sentence[start:end].
  """

  label: str
  start: int
  end: int
  text: str


@dataclasses.dataclass(frozen=True)
class Sentence:
  """One annotated sentence.

  Attributes:
    doc_id: article id (e.g. 'PMC4495617').
    sentence_id: 1-based id from the annotation files.
    start: first character in texts/<doc>.txt.
    end: one past the last character in texts/<doc>.txt.
    text: the sentence text.
    is_experiment: whether the sentence describes an SOFC experiment.
    entities: entity mentions (experiment sentences only carry them).
    slots: slot fillers, without the evoking word.
    words: (start, end) of the annotation's word tokens, relative to the sentence (the rows of
      entity_types_and_slots; experiment sentences only), for token taggers.
  """

  doc_id: str
  sentence_id: int
  start: int
  end: int
  text: str
  is_experiment: bool
  entities: tuple[Mention, ...] = ()
  slots: tuple[Mention, ...] = ()
  words: tuple[tuple[int, int], ...] = ()


@dataclasses.dataclass(frozen=True)
class Frame:
  """One EXPERIMENT frame.

  Attributes:
    frame_id: id from frames/<doc>.csv.
    sentence_id: sentence of the evoking word.
    evoking: text of the evoking word span.
    slots: (slot name, mention text) in file order.
  """

  frame_id: int
  sentence_id: int
  evoking: str
  slots: tuple[tuple[str, str], ...]


@dataclasses.dataclass(frozen=True)
class Article:
  """The annotations of one article.

  Attributes:
    doc_id: article id.
    split: 'train' or 'dev' (metadata.tsv).
    sentences: in file order.
    frames: experiment frames.
  """

  doc_id: str
  split: str
  sentences: tuple[Sentence, ...]
  frames: tuple[Frame, ...] = ()


def _rows(path: pathlib.Path) -> Iterable[tuple[int, list[str]]]:
  """(line number, tab-separated fields) of the non-blank lines of a file."""
  with path.open(encoding="utf-8") as handle:
    for line_no, line in enumerate(handle, 1):
      line = line.rstrip("\r\n")
      if line.strip():
        yield line_no, line.split("\t")


def _ints(path: pathlib.Path, line_no: int, fields: Sequence[str], what: str) -> list[int]:
  try:
    return [int(f) for f in fields]
  except ValueError:
    raise ValueError(f"{path}:{line_no}: expected integers for {what}, got {list(fields)}"
                     ) from None


def read_splits(root: str | pathlib.Path) -> dict[str, str]:
  """Reads the train/dev split of metadata.tsv.

  Args:
    root: the data root (holds metadata.tsv).

  Returns:
    {doc_id: 'train' | 'dev'}.

  Raises:
    ValueError: a row without name/set columns or an unknown split (names file and line).
  """
  path = pathlib.Path(root) / "metadata.tsv"
  out: dict[str, str] = {}
  with path.open(encoding="utf-8", newline="") as handle:
    # csv handles the quoted fields, one of which holds a newline (a publisher name);
    # reader.line_num is the physical line a row ends on.
    reader = csv.reader(handle, delimiter="\t")
    header = [f.strip() for f in next(reader, [])]
    if "name" not in header or "set" not in header:
      raise ValueError(f"{path}:1: header needs 'name' and 'set' columns, got {header}")
    name_col, set_col = header.index("name"), header.index("set")
    for fields in reader:
      if not any(f.strip() for f in fields):
        continue
      need = max(name_col, set_col) + 1
      if len(fields) < need:
        raise ValueError(f"{path}:{reader.line_num}: expected at least {need} tab-separated "
                         f"fields, got {len(fields)}")
      name, split = fields[name_col].strip(), fields[set_col].strip()
      if split not in SPLITS:
        raise ValueError(f"{path}:{reader.line_num}: split {split!r} of {name} is not one of "
                         f"{SPLITS}")
      out[name] = split
  if not out:
    raise ValueError(f"{path}: no articles listed")
  return out


def _decode_bio(path: pathlib.Path, rows: Sequence[tuple[int, int, int, str]], text: str
                ) -> list[Mention]:
  """Spans of (line_no, begin, end, tag) token rows of one sentence, in token order."""
  spans: list[list] = []  # [label, start, end]
  previous = "O"
  for line_no, begin, end, tag in rows:
    if tag == "O":
      previous = tag
      continue
    if len(tag) < 3 or tag[:2] not in ("B-", "I-"):
      raise ValueError(f"{path}:{line_no}: tag {tag!r} is not O, B-<label> or I-<label>")
    label = tag[2:]
    if tag.startswith("I-") and previous != "O" and previous[2:] == label and spans:
      spans[-1][2] = end
    else:
      spans.append([label, begin, end])
    previous = tag
  return [Mention(label, start, end, text[start:end]) for label, start, end in spans]


def _read_sentences(path: pathlib.Path, text: str, text_path: pathlib.Path
                    ) -> list[tuple[int, int, int, bool]]:
  out = []
  for line_no, fields in _rows(path):
    if len(fields) != 4:
      raise ValueError(f"{path}:{line_no}: expected 4 tab-separated fields (sentence_id, "
                       f"is_experiment, begin, end), got {len(fields)}")
    sid, flag, begin, end = _ints(path, line_no, fields, "sentence_id/is_experiment/begin/end")
    if flag not in (0, 1):
      raise ValueError(f"{path}:{line_no}: is_experiment must be 0 or 1, got {flag}")
    if not 0 <= begin < end <= len(text):
      raise ValueError(f"{path}:{line_no}: offsets {begin}..{end} outside {text_path} "
                       f"({len(text)} characters)")
    out.append((sid, begin, end, bool(flag)))
  return out


def _read_tags(path: pathlib.Path, lengths: dict[int, int]
               ) -> dict[int, tuple[list, list]]:
  """sentence_id -> (entity rows, slot rows) of (line_no, begin, end, tag)."""
  out: dict[int, tuple[list, list]] = {}
  for line_no, fields in _rows(path):
    if len(fields) != 6:
      raise ValueError(f"{path}:{line_no}: expected 6 tab-separated fields (sentence_id, "
                       f"token_id, begin, end, entity tag, slot tag), got {len(fields)}")
    sid, _, begin, end = _ints(path, line_no, fields[:4], "sentence_id/token_id/begin/end")
    if sid not in lengths:
      raise ValueError(f"{path}:{line_no}: sentence {sid} is not in the sentences file")
    if not 0 <= begin < end <= lengths[sid]:
      raise ValueError(f"{path}:{line_no}: token offsets {begin}..{end} outside sentence {sid} "
                       f"({lengths[sid]} characters)")
    entities, slots = out.setdefault(sid, ([], []))
    entities.append((line_no, begin, end, fields[4].strip()))
    slots.append((line_no, begin, end, fields[5].strip()))
  return out


def _read_frames(path: pathlib.Path, texts: dict[int, str]) -> list[Frame]:
  spans: dict[int, tuple[int, str]] = {}
  frames: list[list] = []  # [frame_id, sentence_id, evoking, slots]
  for line_no, fields in _rows(path):
    kind = fields[0]
    if kind == "SPAN":
      if len(fields) != 6:
        raise ValueError(f"{path}:{line_no}: SPAN rows need 6 fields, got {len(fields)}")
      span_id = _ints(path, line_no, fields[1:2], "span id")[0]
      sid, begin, end = _ints(path, line_no, fields[3:6], "sentence_id/begin/end")
      if sid not in texts or not 0 <= begin < end <= len(texts[sid]):
        raise ValueError(f"{path}:{line_no}: span {begin}..{end} of sentence {sid} is outside "
                         "the annotated sentences")
      spans[span_id] = (sid, texts[sid][begin:end])
    elif kind == "EXPERIMENT":
      if len(fields) != 3:
        raise ValueError(f"{path}:{line_no}: EXPERIMENT rows need 3 fields, got {len(fields)}")
      frame_id, span_id = _ints(path, line_no, fields[1:3], "frame id/span id")
      if span_id not in spans:
        raise ValueError(f"{path}:{line_no}: evoking span {span_id} was not defined before")
      frames.append([frame_id, spans[span_id][0], spans[span_id][1], []])
    elif kind == "" and len(fields) == 3:
      if not frames:
        raise ValueError(f"{path}:{line_no}: slot row before any EXPERIMENT row")
      span_id = _ints(path, line_no, fields[2:3], "span id")[0]
      if span_id not in spans:
        raise ValueError(f"{path}:{line_no}: slot span {span_id} was not defined before")
      frames[-1][3].append((fields[1].strip(), spans[span_id][1]))
    elif kind == "LINK":
      if len(fields) != 4:
        raise ValueError(f"{path}:{line_no}: LINK rows need 4 fields, got {len(fields)}")
    else:
      raise ValueError(f"{path}:{line_no}: unknown frame row kind {kind!r} ({len(fields)} "
                       "fields); expected SPAN, EXPERIMENT, <tab>slot or LINK")
  return [Frame(f[0], f[1], f[2], tuple(f[3])) for f in frames]


def read_article(root: str | pathlib.Path, doc_id: str, split: str = "") -> Article:
  """Reads one article's sentences, entity mentions, slot fillers and frames.

  Args:
    root: the data root.
    doc_id: the article id.
    split: its split (stored on the Article; '' when unknown).

  Returns:
    The Article.

  Raises:
    FileNotFoundError: a missing text or sentences file.
    ValueError: a malformed row (names the file and line).
  """
  root = pathlib.Path(root)
  text_path = root / "texts" / f"{doc_id}.txt"
  text = text_path.read_text(encoding="utf-8")
  ann = root / "annotations"
  rows = _read_sentences(ann / "sentences" / f"{doc_id}.csv", text, text_path)
  texts = {sid: text[begin:end] for sid, begin, end, _ in rows}
  tags_path = ann / "entity_types_and_slots" / f"{doc_id}.csv"
  tags = _read_tags(tags_path, {sid: len(t) for sid, t in texts.items()}) \
      if tags_path.exists() else {}
  sentences = []
  for sid, begin, end, is_exp in rows:
    entity_rows, slot_rows = tags.get(sid, ([], []))
    entities = _decode_bio(tags_path, entity_rows, texts[sid])
    slots = [m for m in _decode_bio(tags_path, slot_rows, texts[sid]) if m.label != EVOKING_SLOT]
    words = tuple((b, e) for _, b, e, _ in entity_rows)
    sentences.append(Sentence(doc_id, sid, begin, end, texts[sid], is_exp, tuple(entities),
                              tuple(slots), words))
  frames_path = ann / "frames" / f"{doc_id}.csv"
  frames = _read_frames(frames_path, texts) if frames_path.exists() else []
  return Article(doc_id, split, tuple(sentences), tuple(frames))


def load_articles(root: str | pathlib.Path, split: str = "", doc_ids: Sequence[str] = (),
                  max_articles: int = 0) -> list[Article]:
  """Reads the articles of one split (or all), in doc_id order.

  Args:
    root: the data root.
    split: 'train', 'dev' or '' (all).
    doc_ids: keep only these (in this order) when given.
    max_articles: keep the first this many (0 = all).

  Returns:
    Articles.

  Raises:
    ValueError: unknown split or doc_id, or a malformed row.
  """
  if split and split not in SPLITS:
    raise ValueError(f"split {split!r} is not one of {SPLITS} or ''")
  splits = read_splits(root)
  names = list(doc_ids) if doc_ids else sorted(splits)
  unknown = [n for n in names if n not in splits]
  if unknown:
    raise ValueError(f"articles {unknown} are not in {pathlib.Path(root) / 'metadata.tsv'}")
  names = [n for n in names if not split or splits[n] == split]
  if max_articles > 0:
    names = names[:max_articles]
  return [read_article(root, name, splits[name]) for name in names]
