"""Tests for penrose_jax.data.ingest and segment (formats, bad input, plain-text heuristics)."""

import pytest

from penrose_jax.data import ingest, segment

MARKDOWN = """# Iron Alloys

Preamble text about iron.

## Phases
Ferrite is BCC.

```
## not a heading
```

## References
[1] Someone.

### Empty

## Steel
Steel has under 2.14 wt% C.
"""

LATEX = r"""\documentclass{article}
\title{Band \emph{Gaps}}
\begin{document}
\maketitle
\begin{abstract}Silicon is studied.\end{abstract}
\section{Introduction} Silicon has a gap of 1.12~eV \cite{x}. % comment
\subsection{Doping} Boron is an \textbf{acceptor}.\label{sec:d}
\begin{figure}caption text\end{figure}
\bibliography{refs}
\end{document}
"""

JATS = """<?xml version="1.0"?>
<article xmlns:xlink="http://www.w3.org/1999/xlink"><front><article-meta><title-group>
<article-title>Ceria Anodes</article-title></title-group>
<abstract><p>We coat anodes.</p></abstract></article-meta></front>
<body><sec><title>Introduction</title><p>SOFCs run hot.</p>
  <sec><title>Background</title><p>Ni is used <xref>1</xref>.</p>
  <fig><caption>Figure text</caption></fig></sec></sec>
<sec><title>Results</title><p>Power was 1 W cm-2.</p></sec></body>
<back><ref-list><ref>Ref one</ref></ref-list></back></article>
"""


def _write(tmp_path, name, data):
  path = tmp_path / name
  path.write_bytes(data if isinstance(data, bytes) else data.encode('utf-8'))
  return path


def test_markdown(tmp_path):
  doc = ingest.load_document(_write(tmp_path, 'iron.md', MARKDOWN))
  assert doc.doc_id == 'iron' and doc.title == 'Iron Alloys'
  assert [s.title for s in doc.sections] == ['Overview', 'Phases', 'Steel']
  assert [s.order for s in doc.sections] == [0, 1, 2]
  assert '## not a heading' in doc.sections[1].text
  assert doc.sections[2].text == 'Steel has under 2.14 wt% C.'


def test_latex(tmp_path):
  doc = ingest.load_document(_write(tmp_path, 'si.tex', LATEX))
  assert doc.title == 'Band Gaps'
  assert [s.title for s in doc.sections] == ['Abstract', 'Introduction', 'Doping']
  assert doc.sections[1].text == 'Silicon has a gap of 1.12 eV .'
  assert doc.sections[2].text == 'Boron is an acceptor.'


def test_jats_nested_sections_and_abstract(tmp_path):
  doc = ingest.load_document(_write(tmp_path, 'PMC1.xml', JATS))
  assert doc.title == 'Ceria Anodes'
  assert [(s.title, s.text) for s in doc.sections] == [
      ('Abstract', 'We coat anodes.'), ('Introduction', 'SOFCs run hot.'),
      ('Background', 'Ni is used 1.'), ('Results', 'Power was 1 W cm-2.')]


def test_plain_text_without_headings_is_grouped_by_length(tmp_path):
  text = 'Plain notes\n' + '\n'.join(f'Sentence number {i} has five words.' for i in range(200))
  doc = ingest.load_document(_write(tmp_path, 'notes.txt', text))
  assert doc.title == 'Plain notes'
  words = [len(s.text.split()) for s in doc.sections]
  assert [s.title for s in doc.sections][:2] == ['Part 1', 'Part 2']
  assert sum(words) == 200 * 6 and max(words) <= 400 and min(words[:-1]) >= 150


PMC_LIKE = """Thin Films for Cells Thin Films for Cells KimA1 LeeB2 1Seoul National University, Korea We made cells.
The cells gave 1.07 V.
Atomic layer deposition Fuel cell Background Fuel cells operate at high temperatures near 800 °C.
They need dense electrolytes.
Methods Thin-film characterization Films were analysed by XPS.
Figure 1 XPS spectra of the films.
Results and Discussion 3.1.
Structure The films were dense and 60 nm thick.
The discussion continues. 3.2.
Kinetics of Oxidation 3.2.1.
Rates The rate was measured at 500 °C.
Conclusions The cells work.
Acknowledgments This work was supported by a grant. 1 SmithJ Some reference 2001
"""


def test_plain_text_paper_headings(tmp_path):
  doc = ingest.load_document(_write(tmp_path, 'PMC9.txt', PMC_LIKE))
  assert doc.title == 'Thin Films for Cells'
  titles = [s.title for s in doc.sections]
  assert titles == ['Abstract', 'Background', 'Methods', 'Results and Discussion', 'Conclusions']
  by_title = {s.title: s.text for s in doc.sections}
  assert 'Seoul' not in by_title['Abstract'] and 'The cells gave 1.07 V.' in by_title['Abstract']
  assert by_title['Background'].startswith('Fuel cells operate')
  assert 'Figure 1' not in by_title['Methods']
  assert 'Kinetics of Oxidation' not in by_title['Results and Discussion']
  assert '3.2' not in by_title['Results and Discussion']
  assert 'grant' not in ' '.join(by_title.values())


def test_plain_text_subsection_titles_used_when_splitting():
  lines = ['Introduction Text starts here.']
  for k, name in enumerate(['Alpha', 'Beta', 'Gamma']):
    lines.append(f'Part heading {name} {k + 2}.{k + 1}.')
    lines += [f'Sub{k} The sentence {i} of block {k} has words.' for i in range(30)]
  title, titled = segment.segment_plain_text('\n'.join(lines), max_words=200, min_words=100)
  assert title == ''
  names = [t for t, _ in titled]
  assert names[0] == 'Introduction (part 1)'
  assert any(n.startswith('Introduction: Part heading') for n in names)


@pytest.mark.parametrize('line, expected', [
    ('Kinetics of Oxidation 2.4.2.', ('Kinetics of Oxidation', '2.4.2.', True)),
    ('It is discussed below. 2.2.', ('It is discussed below.', '2.2.', False)),
    ('The pH of the solution was 1.5.', ('The pH of the solution was 1.5.', None, False)),
])
def test_split_trailing_label(line, expected):
  assert segment.split_trailing_label(line) == expected


def test_load_corpus_reports_bad_files_and_continues(tmp_path):
  _write(tmp_path, 'good.md', '# T\n\n## S\nText.')
  _write(tmp_path, 'empty.txt', '  \n')
  _write(tmp_path, 'latin1.txt', b'caf\xe9 ol\xe9\n')
  _write(tmp_path, 'broken.xml', '<article><body><sec></body></article>')
  _write(tmp_path, 'notarticle.xml', '<html/>')
  _write(tmp_path, 'headings_only.md', '# Title\n## A\n## B\n')
  _write(tmp_path, 'ignored.jsonl', '{}')
  docs, problems = ingest.load_corpus(tmp_path)
  assert [d.doc_id for d in docs] == ['good']
  reasons = dict(p.split(': ', 1) for p in problems)
  assert set(reasons) == {'empty.txt', 'latin1.txt', 'broken.xml', 'notarticle.xml',
                          'headings_only.md'}
  assert reasons['empty.txt'] == 'empty file'
  assert 'not valid UTF-8' in reasons['latin1.txt'] and '0xe9' in reasons['latin1.txt']
  assert reasons['broken.xml'].startswith('XML parse error')
  assert 'expected <article>' in reasons['notarticle.xml']
  assert reasons['headings_only.md'] == 'no sections with text found'


def test_load_corpus_format_filter_and_split(tmp_path):
  _write(tmp_path, 'a.md', '# A\n## S\n' + 'word ' * 900)
  _write(tmp_path, 'b.tex', LATEX)
  docs, problems = ingest.load_corpus(tmp_path, formats=['markdown'], max_section_words=400)
  assert problems == [] and [d.doc_id for d in docs] == ['a']
  with pytest.raises(ValueError):
    ingest.load_corpus(tmp_path, formats=['docx'])
  with pytest.raises(FileNotFoundError):
    ingest.load_corpus(tmp_path / 'missing')


def test_long_markdown_section_split():
  doc = ingest.read_markdown('# A\n## S\n' + '\n\n'.join(['Words here now.'] * 300), 'a')
  split = ingest.split_long_sections(doc, 400)
  assert [s.title for s in split.sections][:2] == ['S (part 1)', 'S (part 2)']
  assert all(len(s.text.split()) <= 400 for s in split.sections)
