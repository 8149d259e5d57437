"""The tokens of the search index: what an order is findable by, each as a keyed blind token.

Every token is `kind` (two letters) + 12 hex digits (48 bits) of HMAC-SHA256(key, kind:value),
the key derived from the PII master key (core/crypto.py). The index therefore holds no plain
name, phone, address or id, and every token is plain ASCII that both engines (PostgreSQL
`simple` tsvector, SQLite FTS5 `unicode61`) keep whole. The query parser (query.py) builds the
same tokens from what a person types, so matching is exact token equality; fuzziness (pinyin,
near-miss pinyin, phone fragments, id suffixes) is decided here, when the row is written.
Pure functions: no database, no I/O beyond loading the shipped user dictionary once; the
catalogue's words are added to the segmenter by search/dictionary.py (the same words in every
process, ADR 0029 addendum).
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import hmac
import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from ordertally.core.crypto import get_cipher

# kind -> the field a match is explained with (the API's `highlights[].field`).
FIELDS: dict[str, str] = {
    "on": "order_no",
    "os": "order_no_suffix",
    "ex": "platform_order_id",
    "wb": "waybill_no",
    "pt": "payment_id",
    "pf": "phone",
    "p4": "phone_last4",
    "p7": "phone_masked",
    "nm": "name",
    "nc": "name",
    "py": "name_pinyin",
    "pi": "name_initials",
    "pn": "name_pinyin_near",
    "ps": "name_pinyin",
    "ad": "address",
    "sk": "sku",
    "pw": "product",
    "br": "brand",
    "bp": "brand_pinyin",
    "cg": "category",
    "dt": "date",
    "st": "status",
    "ch": "channel",
    "wh": "warehouse",
    "ca": "carrier",
    "xo": "open_exception",
}
# Suffixes of order numbers shorter than this are not indexed (too many orders share them).
MIN_SUFFIX = 6
# A name with many polyphonic characters is indexed under at most this many readings.
MAX_READINGS = 16
CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
MASKED_PHONE = re.compile(r"^(?:\+?86)?(1\d{2})\*{3,5}(\d{4})$")
MAINLAND_MOBILE = re.compile(r"^(?:86)?(1[3-9]\d{9})$")
_ADMIN_SUFFIX = re.compile(
    r"(特别行政区|维吾尔自治区|壮族自治区|回族自治区|自治区|自治州|省|市|区|县)$"
)
USER_DICT = Path(__file__).with_name("userdict.txt")
# The frequency every catalogue word gets: fixed (not suggested from the dictionary's state),
# so that every process that has added the same words cuts the same way, whatever the order.
CATALOG_WORD_FREQ = 100


@functools.lru_cache(maxsize=1)
def _key() -> bytes:
    return get_cipher().derive_key("search token v1")


def reset_key() -> None:
    """Forget the cached token key and tokens (tests, key rotation: then `search rebuild`)."""
    _key.cache_clear()
    token.cache_clear()
    _static_tokens.cache_clear()


@functools.lru_cache(maxsize=262_144)
def token(kind: str, value: str) -> str:
    """The blind token of one (kind, value); the kind stays readable for explanations.

    Cached: most values repeat across orders (dates, places, products, pinyin)."""
    return kind + hmac.digest(_key(), f"{kind}:{value}".encode(), "sha256")[:6].hex()


def norm(text: str) -> str:
    """NFKC (full-width to ASCII), lower case, no spaces: how every value is compared."""
    return re.sub(r"\s+", "", unicodedata.normalize("NFKC", text)).lower()


# --- Chinese segmentation ---------------------------------------------------------------------


_SEGMENTER: list[Any] = []
# Bumped whenever the segmenter's words change: the cut of a text is cached per generation.
_GENERATION = [0]


def _segmenter() -> Any:
    if not _SEGMENTER:
        import rjieba

        jieba = rjieba.Jieba()
        for line in USER_DICT.read_text(encoding="utf-8").splitlines():
            word, *rest = line.split()
            jieba.add_word(word, int(rest[0]) if rest else None, rest[1] if len(rest) > 1 else None)
        _SEGMENTER.append(jieba)
    return _SEGMENTER[0]


def reset_segmenter() -> None:
    """Back to the shipped dictionary alone (another database's words are forgotten)."""
    _SEGMENTER.clear()
    _GENERATION[0] += 1


def add_catalog_words(found: Iterable[str]) -> int:
    """Add catalogue words to the segmenter (a word it knows already keeps its frequency, so
    the result does not depend on the order words arrive in); returns how many were new."""
    jieba = _segmenter()
    added = 0
    for w in found:
        if not jieba.has_word(w):
            jieba.add_word(w, CATALOG_WORD_FREQ, None)
            added += 1
    if added:
        _GENERATION[0] += 1
    return added


def words(text: str) -> list[str]:
    """Search-mode segmentation (the words and their longer compounds), normalised, no
    punctuation; the same user dictionary at index and query time."""
    return list(_cut(text, True, _GENERATION[0]))


def query_words(text: str) -> list[str]:
    """Precise-mode segmentation of what a person typed (no overlapping compounds)."""
    return list(_cut(text, False, _GENERATION[0]))


@functools.lru_cache(maxsize=65_536)
def _cut(text: str, search_mode: bool, generation: int) -> tuple[str, ...]:
    """The cut of a text by the segmenter of one generation (names, places, products and
    what people type repeat: each is cut once while the words stay the same)."""
    jieba = _segmenter()
    nfkc = unicodedata.normalize("NFKC", text)
    cut = jieba.cut_for_search(nfkc) if search_mode else jieba.cut(nfkc)
    return tuple(w for w in (norm(w) for w in cut) if w and any(c.isalnum() for c in w))


# --- pinyin -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=8192)
def readings(char: str) -> tuple[str, ...]:
    """Every pinyin reading of one character (polyphonic ones have several: 曾 ceng/zeng)."""
    from pypinyin import Style, pinyin

    found = pinyin(char, style=Style.NORMAL, heteronym=True, errors="ignore")
    return tuple(dict.fromkeys(r for r in (found[0] if found else []) if r.isascii() and r))


def near(pinyin_text: str) -> str:
    """Near-miss pinyin key (模糊音): zh/z, ch/c, sh/s, -ng/-n, n/l, h/f, r/l fold together.

    Applied the same way to the index and the query, so zhangshan finds 张三. -ng/-n folds
    until no ng is left: a syllable ending in -ng before one starting with g (王国 wangguo)
    folds to what the caller who drops the g types (wanguo), not to another key."""
    s = pinyin_text.replace("zh", "z").replace("ch", "c").replace("sh", "s")
    while "ng" in s:
        s = s.replace("ng", "n")
    return s.replace("n", "l").replace("h", "f").replace("r", "l")


def name_readings(name: str) -> list[list[str]]:
    """The readings of each character of a Chinese name (empty when a character has none)."""
    return [list(readings(c)) for c in name if CJK.match(c)]


def _combinations(per_char: list[list[str]]) -> Iterator[tuple[str, ...]]:
    """At most MAX_READINGS readings of a name, the likeliest first: every reading of the first
    character (a surname is often read its rarer way: 单 shan, 曾 zeng) with the other
    characters' readings by increasing rank (pypinyin lists a character's commonest reading
    first; best first over rank sums, so a long text costs MAX_READINGS steps, not its
    product). In plain product order a given name with polyphonic characters used the whole
    cap on the surname's first reading (单娜平 has 24 readings: shan was never reached)."""
    if not per_char or any(not r for r in per_char):
        return iter(())
    first, rest = per_char[0], per_char[1:]
    start = (0,) * len(rest)
    heap, seen = [(0, start)], {start}
    found: list[tuple[str, ...]] = []
    while heap and len(found) < MAX_READINGS:
        total, ranks = heapq.heappop(heap)
        tail = tuple(r[i] for r, i in zip(rest, ranks, strict=True))
        found.extend((head, *tail) for head in first)
        for j, rank in enumerate(ranks):
            if rank + 1 < len(rest[j]):
                step = (*ranks[:j], rank + 1, *ranks[j + 1 :])
                if step not in seen:
                    seen.add(step)
                    heapq.heappush(heap, (total + 1, step))
    return iter(found[:MAX_READINGS])


# --- phones -----------------------------------------------------------------------------------


def phone_forms(raw: str) -> dict[str, str]:
    """kind -> value of a stored phone: full mainland number, last four, first three + last four.

    A platform-masked number (138****5678) gives only its two visible parts."""
    compact = re.sub(r"[\s()\-]", "", unicodedata.normalize("NFKC", raw))
    masked = MASKED_PHONE.match(compact)
    if masked:
        return {"p4": masked.group(2), "p7": masked.group(1) + masked.group(2)}
    digits = re.sub(r"\D", "", compact)
    mobile = MAINLAND_MOBILE.match(digits)
    if mobile:
        n = mobile.group(1)
        return {"pf": n, "p4": n[-4:], "p7": n[:3] + n[-4:]}
    if len(digits) >= 6:  # a landline or a foreign number: whole and last four
        return {"pf": digits, "p4": digits[-4:]}
    return {}


# --- the facts of one order -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OrderFacts:
    """What an order is findable by, gathered from the domains that own each part."""

    order_no: str
    channel: str
    status: str
    placed_on: date  # merchant-local date
    external_id: str | None = None
    names: tuple[str, ...] = ()
    phones: tuple[str, ...] = ()  # E.164, plain digits or platform-masked forms
    address: tuple[str, ...] = ()  # province, city, district, line1
    skus: tuple[tuple[str, str], ...] = ()  # (code, name)
    brands: tuple[str, ...] = ()  # the lines' brands from the catalogue, zh and en
    categories: tuple[str, ...] = ()  # their category names (and those above), zh and en
    waybills: tuple[str, ...] = ()
    payment_ids: tuple[str, ...] = ()  # out_trade_no, provider transaction ids
    warehouses: tuple[str, ...] = ()
    carriers: tuple[str, ...] = ()
    open_exception: bool = False
    extra: tuple[tuple[str, str], ...] = field(default=())


def admin_short(name: str) -> str:
    """上海市 -> 上海, 广西壮族自治区 -> 广西 (people say the short form)."""
    short = _ADMIN_SUFFIX.sub("", norm(name))
    return short if len(short) >= 2 else norm(name)


def name_pairs(name: str) -> Iterator[tuple[str, str]]:
    """(kind, value) of a person's name: whole, characters, pinyin, initials, near-miss."""
    n = norm(name)
    if not n or n == "-":
        return
    yield "nm", n
    if not CJK.search(n):
        for part in re.split(r"[\s.]+", unicodedata.normalize("NFKC", name).lower()):
            if part:
                yield "nm", part
        return
    for c in n:
        if CJK.match(c):
            yield "nc", c
    per_char = name_readings(n)
    for r in per_char:
        for syllable in r:
            yield "ps", syllable
    for combo in _combinations(per_char):
        joined = "".join(combo)
        yield "py", joined
        yield "pi", "".join(s[0] for s in combo)
        yield "pn", near(joined)


@functools.lru_cache(maxsize=65_536)
def _name_pairs(name: str) -> tuple[tuple[str, str], ...]:
    # A customer's name comes back with each of their orders; no segmenter involved.
    return tuple(name_pairs(name))


def brand_pairs(brand: str) -> Iterator[tuple[str, str]]:
    """(kind, value) of a brand: whole, its words (Chinese words, English words) and, for a
    Chinese brand, its pinyin (every reading: 八马 -> bama)."""
    n = norm(brand)
    if not n:
        return
    yield "br", n
    for w in words(brand):
        if len(w) > 1:
            yield "br", w
    for part in re.split(r"[^0-9a-z]+", unicodedata.normalize("NFKC", brand).lower()):
        if len(part) > 1:
            yield "br", part
    if CJK.search(n):
        for combo in _combinations(name_readings(n)):
            yield "bp", "".join(combo)


def id_pairs(kind: str, value: str, suffixes: bool = False) -> Iterator[tuple[str, str]]:
    """An identifier, whole (upper case) and, for order numbers, its suffixes of 6+."""
    v = norm(value).upper()
    if not v:
        return
    yield kind, v
    if suffixes:
        for i in range(1, len(v) - MIN_SUFFIX + 1):
            yield "os", v[i:]


def _static_pairs(facts: OrderFacts) -> tuple[Iterator[tuple[str, str]], ...]:
    """(kind, value) of what an order keeps from its creation on (numbers, buyer, address,
    products, date, channel), in three runs that `pairs` interleaves with the rest."""
    head = [*id_pairs("on", facts.order_no, suffixes=True)]
    if facts.external_id:
        head.extend(id_pairs("ex", facts.external_id))
    return iter(head), _buyer_and_goods(facts), iter([("ch", norm(facts.channel))])


def _buyer_and_goods(facts: OrderFacts) -> Iterator[tuple[str, str]]:
    for name in facts.names:
        yield from _name_pairs(name)
    for phone in facts.phones:
        yield from phone_forms(phone).items()
    for part in facts.address:
        if not part:
            continue
        yield "ad", norm(part)
        yield "ad", admin_short(part)
        for w in words(part):
            if len(w) > 1:
                yield "ad", w
    for code, name in facts.skus:
        yield "sk", norm(code).upper()
        if name:
            yield "pw", norm(name)
            for w in words(name):
                if len(w) > 1:
                    yield "pw", w
    for brand in facts.brands:
        yield from brand_pairs(brand)
    for name in facts.categories:
        n = norm(name)
        if n:
            yield "cg", n
            for w in words(name):
                if len(w) > 1:
                    yield "cg", w
    yield "dt", facts.placed_on.strftime("%Y%m%d")


def _moving_pairs(facts: OrderFacts) -> tuple[Iterator[tuple[str, str]], ...]:
    """(kind, value) of what changes as an order moves on (waybills, payments, status,
    warehouses, carriers, exceptions), in the runs `pairs` interleaves with the rest."""
    ids = [*(p for w in facts.waybills for p in id_pairs("wb", w))]
    ids.extend(p for pid in facts.payment_ids for p in id_pairs("pt", pid))
    tail = [*(("wh", norm(code)) for code in facts.warehouses)]
    tail.extend(("ca", norm(code)) for code in facts.carriers)
    if facts.open_exception:
        tail.append(("xo", "1"))
    tail.extend(facts.extra)
    return iter(ids), iter([("st", facts.status)]), iter(tail)


def pairs(facts: OrderFacts) -> Iterator[tuple[str, str]]:
    """Every (kind, value) an order is indexed under."""
    head, buyer, channel = _static_pairs(facts)
    ids, status, tail = _moving_pairs(facts)
    for run in (head, ids, buyer, status, channel, tail):
        yield from run


def _lasting(facts: OrderFacts) -> OrderFacts:
    """The facts with the moving parts left out: what `_static_pairs` reads, as a cache key."""
    return dataclasses.replace(
        facts,
        status="",
        waybills=(),
        payment_ids=(),
        warehouses=(),
        carriers=(),
        open_exception=False,
        extra=(),
    )


@functools.lru_cache(maxsize=16_384)
def _static_tokens(lasting: OrderFacts, generation: int) -> tuple[tuple[str, ...], ...]:
    # `generation`: the segmenter's words cut the address and the products.
    return tuple(tuple(token(k, v) for k, v in run) for run in _static_pairs(lasting))


def tokens_of(facts: OrderFacts) -> str:
    """The index row's token text: distinct blind tokens, space separated.

    An order is re-indexed at each step of its life (created, paid, allocated, shipped...)
    while its buyer, address and products stay: their tokens (most of a row's, and all of its
    pinyin and segmentation) are kept per process for the orders seen last, and only the moving
    parts are made again. The text is the same as `pairs` in order, cached or not."""
    head, buyer, channel = _static_tokens(_lasting(facts), _GENERATION[0])
    ids, status, tail = (tuple(token(k, v) for k, v in run) for run in _moving_pairs(facts))
    return " ".join(dict.fromkeys((*head, *ids, *buyer, *status, *channel, *tail)))


def explain(row_tokens: str, legend: dict[str, list[tuple[str, str]]]) -> list[dict[str, str]]:
    """Which typed term matched which field, in the query's order, from the row's token text
    as stored (space separated; a token is in the row when it stands between spaces in it)
    and the query's legend (token -> the terms and kinds it stands for)."""
    padded = f" {row_tokens} "
    seen: dict[tuple[str, str], None] = {}
    for t, meanings in legend.items():
        if f" {t} " in padded:
            for term, kind in meanings:
                seen.setdefault((term, FIELDS[kind]), None)
    return [{"term": term, "field": f} for term, f in seen]
