"""Evaluation windows are spread over every document of a set, not the first N in file order."""

from penrose_jax.evaluation import perplexity


def _docs(lengths):
  return [list(range(1000 * d, 1000 * d + n)) for d, n in enumerate(lengths)]


def test_every_document_scored_when_windows_at_least_documents():
  docs = _docs([400, 90, 1000, 260, 33, 700])
  picks = perplexity.window_picks(docs, 64, max_windows=6)
  assert sorted({d for d, _ in picks}) == list(range(6))
  assert len(picks) == 6


def test_shares_are_even_and_capped_per_document():
  docs = _docs([64 * 10, 64 * 2, 64 * 10, 64 * 10])
  picks = perplexity.window_picks(docs, 64, max_windows=20)
  per_doc = [sum(1 for d, _ in picks if d == k) for k in range(4)]
  assert per_doc[1] == 2  # capped at what the short document has
  assert sorted(per_doc[:1] + per_doc[2:]) == [6, 6, 6]  # its surplus shared by the others
  assert len(set(picks)) == 20


def test_positions_spread_inside_a_document():
  docs = _docs([64 * 100])
  starts = [s for _, s in perplexity.window_picks(docs, 64, max_windows=4)]
  assert starts[-1] >= 64 * 60  # not the first four windows
  gaps = [b - a for a, b in zip(starts, starts[1:])]
  assert min(gaps) >= 64 * 20


def test_fewer_windows_than_documents_spread_documents():
  docs = _docs([200] * 10)
  picks = perplexity.window_picks(docs, 64, max_windows=3)
  chosen = [d for d, _ in picks]
  assert len(chosen) == 3 and chosen[-1] >= 6 and chosen[0] <= 3


def test_seeded_and_windows_match_picks():
  docs = _docs([500, 300, 900])
  a = perplexity.window_picks(docs, 64, 5, seed=1)
  assert a == perplexity.window_picks(docs, 64, 5, seed=1)
  windows = perplexity.token_windows(docs, 64, 5, seed=1)
  assert [w[0] for w in windows] == [docs[d][s] for d, s in a]
  assert perplexity.picks_record(["x", "y", "z"], a) == {
      n: [s for d, s in a if d == k] for k, n in enumerate("xyz") if any(d == k for d, _ in a)}


def test_no_cap_keeps_every_window_in_order():
  docs = _docs([130, 1, 70])
  windows = perplexity.token_windows(docs, 64, None)
  assert [len(w) for w in windows] == [64, 64, 2, 64, 6]
