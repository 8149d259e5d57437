"""Which terms of a search the index reads, and which broad ones are checked on the rows it finds
(query.split): decided from how common each term's tokens are, and only where the rarer terms
alone find a handful of rows. Pure: the shares are given."""

from __future__ import annotations

from datetime import date

import pytest

from ordertally.search import query as parser
from ordertally.search import tokens as tk

TODAY = date(2026, 1, 26)
BRAND = tk.token("br", "普洱")
DAY = tk.token("dt", "20260125")


def _nodes(q: str) -> list[parser.Node]:
    return [t.node for t in parser.parse(q, TODAY)]


def _shares(rows: float, **common: float) -> parser.Shares:
    return parser.Shares(rows, {BRAND: common.get("brand", 0.05), DAY: common.get("day", 0.0014)})


def test_a_brand_is_checked_on_the_rows_a_last_four_and_a_date_find() -> None:
    # Given ten million orders, a brand on 5% of them and a day on 0.14%
    shares = _shares(10_000_000)
    nodes = _nodes("普洱 5678 20260125")
    # When the search is split
    read, checked = parser.split(nodes, shares)
    # Then the index reads the date and the last four, and the brand is checked on their rows
    assert [n for n in nodes if n not in read] == checked
    assert len(checked) == 1 and BRAND in {leaf.token for leaf in parser.leaves(checked[0])}
    assert all(BRAND not in {leaf.token for leaf in parser.leaves(n)} for n in read)


def test_nothing_is_split_where_the_rarer_terms_alone_find_too_many_rows() -> None:
    # Given the same shares: a brand with a last four only (~1,000 orders at 10M) / Then the
    # index reads both (checking a thousand rows costs more than the index's intersection)
    assert parser.split(_nodes("普洱 5678"), _shares(10_000_000))[1] == []
    # ... while at 50,000 orders the last four alone finds a handful
    read, checked = parser.split(_nodes("普洱 5678"), _shares(50_000))
    assert len(read) == 1 and len(checked) == 1


@pytest.mark.parametrize(
    "q",
    [
        "普洱",  # one term: nothing beside it
        "20260125 5678",  # no broad term
    ],
)
def test_a_search_without_both_broad_and_rarer_terms_is_read_whole(q: str) -> None:
    nodes = _nodes(q)
    assert parser.split(nodes, _shares(10_000_000)) == (nodes, [])


def test_every_term_broad_or_no_statistics_reads_everything_from_the_index() -> None:
    nodes = _nodes("普洱 20260125")
    # Given a date as common as the brand (a small shop's busiest day) / Then nothing is split
    assert parser.split(nodes, _shares(10_000_000, day=0.2)) == (nodes, [])
    # nor without PostgreSQL's statistics (SQLite, or an index never analysed)
    assert parser.split(nodes, None) == (nodes, [])
    assert parser.split(nodes, parser.Shares(10_000_000, {})) == (nodes, [])


def test_shares_add_up_over_alternatives_and_take_the_rarest_of_words_that_must_all_match() -> None:
    a, b, c = (parser.Leaf("pw", w, w) for w in ("甲", "乙", "丙"))
    shares = parser.Shares(1000, {a.token: 0.3, b.token: 0.2, tk.token("pw", "丁"): 0.02})
    # An unlisted token is half as common as the least common listed (PostgreSQL's estimate)
    assert shares.of(c) == 0.01
    assert shares.of(parser.AnyOf((a, b, c))) == pytest.approx(0.51)
    # Unlisted alternatives count once: most of a term's readings are on no order at all
    d = parser.Leaf("nm", "丙", "丙")
    assert shares.of(parser.AnyOf((c, d))) == 0.01
    assert shares.of(parser.AnyOf((a, parser.AllOf((b, c)), d))) == pytest.approx(0.31)
    assert shares.of(parser.AllOf((a, b))) == 0.2
    assert shares.of(parser.AnyOf((a, a, a, a))) == 1.0
