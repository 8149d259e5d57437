"""The per-process cache of an order's lasting tokens (search/tokens.py): the row's text is the
same cached or not, follows the parts that move, and is made again when the segmenter learns
a word."""

from __future__ import annotations

import dataclasses
from datetime import date

from ordertally.search import dictionary
from ordertally.search import tokens as tk

FACTS = tk.OrderFacts(
    order_no="OT20260125ABC123",
    channel="jd",
    status="paid",
    placed_on=date(2026, 1, 25),
    external_id="JD-778899001",
    names=("曾单", "张三"),
    phones=("13812345678", "138****5678"),
    address=("上海市", "上海市", "浦东新区", "世纪大道1号"),
    skus=(("TEA-LJ-250", "西湖龙井 250g"),),
    brands=("狮峰",),
    categories=("茶叶",),
    waybills=("ZT7000000000001",),
    payment_ids=("OTP123456", "4200000001202601251234567890"),
    warehouses=("WH-SH",),
    carriers=("zhongtong",),
    open_exception=True,
)


def uncached(facts: tk.OrderFacts) -> str:
    """The row's text as it was made before the cache: every pair, in order, then tokens."""
    return " ".join(dict.fromkeys(tk.token(k, v) for k, v in dict.fromkeys(tk.pairs(facts))))


def test_the_text_is_the_same_cached_or_not() -> None:
    # Given an order's facts seen before (the cache holds its lasting tokens)
    first = tk.tokens_of(FACTS)
    # Then the text is the uncached one, token for token and in order, and again from the cache
    assert first == uncached(FACTS)
    assert tk.tokens_of(FACTS) == first
    assert len(first.split()) == len(set(first.split())) > 40


def test_the_moving_parts_are_made_again_each_time() -> None:
    tk.tokens_of(FACTS)
    # When the order moves on (shipped, a second waybill, the exception closed)
    moved = dataclasses.replace(
        FACTS, status="shipped", waybills=("ZT7000000000001", "SF1234567890"), open_exception=False
    )
    text = tk.tokens_of(moved).split()
    # Then the row follows: the new status and waybill in, the old status and the flag out
    assert text == uncached(moved).split()
    assert tk.token("st", "shipped") in text and tk.token("st", "paid") not in text
    assert tk.token("wb", "SF1234567890") in text
    assert tk.token("xo", "1") not in text


def test_a_changed_address_or_name_is_not_served_from_the_cache() -> None:
    tk.tokens_of(FACTS)
    moved = dataclasses.replace(FACTS, address=("浙江省", "杭州市", "西湖区", "文三路100号"))
    text = tk.tokens_of(moved).split()
    assert tk.token("ad", "杭州") in text and tk.token("ad", "浦东新区") not in text
    renamed = dataclasses.replace(FACTS, names=("李四",))
    assert tk.token("py", "zengdan") not in tk.tokens_of(renamed).split()


def test_a_word_the_segmenter_learns_makes_the_lasting_tokens_again() -> None:
    # Given a product title cut without a word the catalogue has not added yet
    facts = dataclasses.replace(FACTS, skus=(("TEA-X", "翡翠冰种手镯"),))
    before = tk.tokens_of(facts).split()
    try:
        # When the catalogue adds it (the segmenter's generation moves on)
        assert tk.add_catalog_words(["冰种手镯"]) == 1
        after = tk.tokens_of(facts).split()
        # Then the cached tokens are not reused: the new word is indexed
        assert tk.token("pw", "冰种手镯") in after
        assert tk.token("pw", "冰种手镯") not in before
        assert after == uncached(facts).split()
    finally:
        dictionary.forget()  # back to the shipped words (the next index loads the catalogue)
