"""The one query parser: what a person typed -> terms (phones, dates, ids, text), each a tree
of alternative index tokens; every term must match (AND), any alternative of a term may.

`张三 5678 20260125` is three terms: a name (its characters, pinyin and words of addresses or
products), a phone's last four, and a date (or the tail of an id). Pure functions; the
engines render the tree (engines.py).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, timedelta

from ordertally.search import tokens as tk


@dataclass(frozen=True, slots=True)
class Leaf:
    kind: str
    value: str
    term: str
    # The blind token, made once: a parse, its render and its legend each ask for it.
    token: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "token", tk.token(self.kind, self.value))


@dataclass(frozen=True, slots=True)
class AnyOf:
    children: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class AllOf:
    children: tuple[Node, ...]


Node = Leaf | AnyOf | AllOf


@dataclass(frozen=True, slots=True)
class Term:
    """One thing the person typed, what the parser took it for, and its alternatives."""

    text: str
    kind: str  # phone | phone_masked | phone_last4 | date | id | number | pinyin | text
    node: Node
    # How a Chinese run was segmented (the catalogue's words included): shown to the caller.
    words: tuple[str, ...] = ()


MAX_QUERY = 200
ID_KINDS = ("on", "os", "ex", "wb", "pt")
_CN_DIGITS = {"一": 1, "二": 2, "两": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8}
_CN_DIGITS |= {"九": 9, "〇": 0, "零": 0}
_CN_NUM = r"[一二两三四五六七八九十〇零]{1,3}"
_RELATIVE = {"今天": 0, "今日": 0, "昨天": 1, "昨日": 1, "前天": 2}

MASKED = re.compile(r"(?<![\d*])(?:\+?86[\s-]?)?(1\d{2})\*{3,5}(\d{4})(?!\d)")
PHONE = re.compile(r"(?<![\d\w])(?:\+?86[\s-]?)?(1[3-9]\d)[\s-]?(\d{4})[\s-]?(\d{4})(?![\d\w])")
FULL_DATE = re.compile(r"(?<!\d)(20\d{2})[-/.年](\d{1,2})[-/.月](\d{1,2})[日号]?(?!\d)")
COMPACT_DATE = re.compile(r"(?<![\w-])(20\d{2})(\d{2})(\d{2})(?![\w-])")
MONTH_DAY = re.compile(r"(?<!\d)(\d{1,2})月(\d{1,2})[日号]?")
CN_MONTH_DAY = re.compile(rf"({_CN_NUM})月({_CN_NUM})[日号]?")
SLASH_DATE = re.compile(r"(?<![\d/])(\d{1,2})/(\d{1,2})(?![\d/])")
RELATIVE = re.compile("|".join(_RELATIVE))
CHUNK = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-./]*|[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")


def _cn_number(text: str) -> int:
    """一 -> 1, 十二 -> 12, 二十五 -> 25 (month and day numbers only)."""
    if "十" in text:
        tens, _, ones = text.partition("十")
        return (_CN_DIGITS.get(tens, 1) if tens else 1) * 10 + (_CN_DIGITS.get(ones, 0))
    return _CN_DIGITS.get(text, 0)


def _day(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _recent(today: date, month: int, day: int) -> date | None:
    """A month and day without a year: the latest such date not after today."""
    found = _day(today.year, month, day)
    if found is not None and found > today:
        found = _day(today.year - 1, month, day)
    return found


def _any(children: list[Node]) -> Node:
    unique: dict[object, Node] = {}
    for c in children:
        unique.setdefault(c.token if isinstance(c, Leaf) else c, c)
    values = tuple(unique.values())
    return values[0] if len(values) == 1 else AnyOf(values)


def _all(children: list[Node]) -> Node:
    return children[0] if len(children) == 1 else AllOf(tuple(children))


def _date_term(text: str, d: date) -> Term:
    return Term(text, "date", Leaf("dt", d.strftime("%Y%m%d"), text))


def _id_leaves(value: str, term: str) -> list[Node]:
    v = value.upper()
    return [Leaf(kind, v, term) for kind in ID_KINDS]


def _word_alternatives(word: str, term: str) -> list[Node]:
    """A Chinese word: a name, a character of a name, an address, product, brand or category
    word."""
    found: list[Node] = [
        Leaf("nm", word, term),
        Leaf("ad", word, term),
        Leaf("pw", word, term),
        Leaf("br", word, term),
        Leaf("cg", word, term),
    ]
    if len(word) == 1:
        found.append(Leaf("nc", word, term))
    return found


def _text_node(text: str, synonyms: Mapping[str, tuple[str, ...]], expand: bool = True) -> Node:
    """A run of Chinese characters: itself as one word, or the words it segments into."""
    w = tk.norm(text)
    alternatives = _word_alternatives(w, text)
    parts = tk.query_words(w)
    # The index keeps no single-character address, product, brand or category word (tokens.py),
    # so one must not be required here: 手机壳 cuts into 手机 + 壳 and is found by 手机. Only
    # a run of single characters keeps them (a name's characters are indexed).
    parts = [p for p in parts if len(p) > 1] or parts
    if parts and parts != [w]:
        alternatives.append(_all([_any(_word_alternatives(p, text)) for p in parts]))
        # The index keeps address and product words of two characters or more: a run whose
        # cut leaves a single character (中南路 -> 中 / 南路, 大学路 -> 大学 / 路) also
        # matches by its longer words alone, as an address or product word (not as a name:
        # 黄玉勇 must not match every 黄玉).
        longer = [p for p in parts if len(p) > 1]
        if longer and len(longer) < len(parts):
            alternatives.append(
                _all([_any([Leaf(k, p, text) for k in ("ad", "pw", "br", "cg")]) for p in longer])
            )
    if expand:
        alternatives.extend(_synonym_nodes(w, text, synonyms))
    return _any(alternatives)


def _pinyin_node(word: str, term: str) -> list[Node]:
    """ASCII letters: a name's pinyin (full, initials, near miss, one syllable), a brand's."""
    w = word.lower()
    return [
        Leaf("bp", w, term),
        Leaf("py", w, term),
        Leaf("pi", w, term),
        Leaf("pn", tk.near(w), term),
        Leaf("ps", w, term),
        Leaf("nm", w, term),
    ]


def _ascii_node(word: str, synonyms: Mapping[str, tuple[str, ...]], expand: bool = True) -> Node:
    """An ASCII chunk: digits, an id or SKU code, or letters (pinyin, an English word)."""
    w = tk.norm(word)
    alternatives: list[Node] = [Leaf("sk", w.upper(), word), Leaf("pw", w, word)]
    if w.isdigit():
        if len(w) == 4:
            alternatives.append(Leaf("p4", w, word))
        if len(w) >= tk.MIN_SUFFIX:
            alternatives.extend(_id_leaves(w, word))
    elif w.isalpha():
        alternatives.extend(_pinyin_node(w, word))
        alternatives.extend(Leaf(k, w, word) for k in ("ch", "wh", "ca", "br", "cg"))
    elif len(w) >= tk.MIN_SUFFIX or any(c.isdigit() for c in w):
        alternatives.extend(_id_leaves(w, word))
    if expand:
        alternatives.extend(_synonym_nodes(w, word, synonyms))
    return _any(alternatives)


def _synonym_nodes(word: str, term: str, synonyms: Mapping[str, tuple[str, ...]]) -> list[Node]:
    """The merchant's synonyms of a word, each as its own (unexpanded) alternatives."""
    found: list[Node] = []
    for other in synonyms.get(word, ()):
        found.append(_free_text(other, synonyms, expand=False, term=term))
    return found


def _free_text(
    text: str, synonyms: Mapping[str, tuple[str, ...]], expand: bool, term: str | None = None
) -> Node:
    """Any text: each chunk (Chinese run, ASCII word) must match."""
    chunks = CHUNK.findall(text)
    nodes: list[Node] = []
    for chunk in chunks:
        if tk.CJK.match(chunk):
            nodes.append(_text_node(chunk, synonyms, expand))
        else:
            nodes.append(_ascii_node(chunk, synonyms, expand))
    if not nodes:
        return Leaf("pw", tk.norm(text), term or text)
    node = _all(nodes)
    if term is not None:
        return _relabel(node, term)
    return node


def _relabel(node: Node, term: str) -> Node:
    if isinstance(node, Leaf):
        return Leaf(node.kind, node.value, term)
    children = tuple(_relabel(c, term) for c in node.children)
    return AnyOf(children) if isinstance(node, AnyOf) else AllOf(children)


def parse(q: str, today: date, synonyms: Mapping[str, tuple[str, ...]] | None = None) -> list[Term]:
    """The terms of a query, in the order they were recognised: phones, dates, then the rest."""
    syn = synonyms or {}
    text = unicodedata.normalize("NFKC", q)[:MAX_QUERY]
    terms: list[Term] = []

    def take(pattern: re.Pattern[str], make: object) -> None:
        nonlocal text

        def replace(m: re.Match[str]) -> str:
            term = make(m)  # type: ignore[operator]
            if term is None:
                return m.group(0)
            terms.append(term)
            return " "

        text = pattern.sub(replace, text)

    take(
        MASKED,
        lambda m: Term(m.group(0), "phone_masked", Leaf("p7", m.group(1) + m.group(2), m.group(0))),
    )

    def phone(m: re.Match[str]) -> Term:
        digits = "".join(m.groups())
        return Term(
            m.group(0),
            "phone",
            _any([Leaf("pf", digits, m.group(0)), *_id_leaves(digits, m.group(0))[1:]]),
        )

    take(PHONE, phone)

    def full(m: re.Match[str]) -> Term | None:
        d = _day(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        return _date_term(m.group(0), d) if d else None

    take(FULL_DATE, full)

    def compact(m: re.Match[str]) -> Term | None:
        d = _day(int(m.group(1)), int(m.group(2)), int(m.group(3)))
        if d is None:
            return None
        leaf = Leaf("dt", d.strftime("%Y%m%d"), m.group(0))
        return Term(m.group(0), "date", _any([leaf, *_id_leaves(m.group(0), m.group(0))]))

    take(COMPACT_DATE, compact)

    def month_day(m: re.Match[str]) -> Term | None:
        d = _recent(today, int(m.group(1)), int(m.group(2)))
        return _date_term(m.group(0), d) if d else None

    take(MONTH_DAY, month_day)
    take(SLASH_DATE, month_day)

    def cn_month_day(m: re.Match[str]) -> Term | None:
        d = _recent(today, _cn_number(m.group(1)), _cn_number(m.group(2)))
        return _date_term(m.group(0), d) if d else None

    take(CN_MONTH_DAY, cn_month_day)
    take(RELATIVE, lambda m: _date_term(m.group(0), today - timedelta(days=_RELATIVE[m.group(0)])))

    # What is left: ASCII words and Chinese runs. Consecutive letter-only words ("zhang san")
    # are also tried joined, as one name's pinyin.
    chunks = CHUNK.findall(text)
    i = 0
    while i < len(chunks):
        chunk = chunks[i]
        if chunk.isascii() and chunk.isalpha():
            j = i
            while j + 1 < len(chunks) and chunks[j + 1].isascii() and chunks[j + 1].isalpha():
                j += 1
            if j > i:
                label = " ".join(chunks[i : j + 1])
                joined = "".join(chunks[i : j + 1]).lower()
                separate = _all([_ascii_node(c, syn) for c in chunks[i : j + 1]])
                node = _any([*_pinyin_node(joined, label), _relabel(separate, label)])
                terms.append(Term(label, "pinyin", node))
                i = j + 1
                continue
        # (every leaf of a chunk's own node already says the chunk as its term)
        if tk.CJK.match(chunk):
            node = _text_node(chunk, syn)
            terms.append(Term(chunk, "text", node, tuple(tk.query_words(tk.norm(chunk)))))
        else:
            kind = "phone_last4" if chunk.isdigit() and len(chunk) == 4 else "id"
            if chunk.isalpha():
                kind = "pinyin"
            terms.append(Term(chunk, kind, _ascii_node(chunk, syn)))
        i += 1
    return terms


def leaves(node: Node) -> list[Leaf]:
    """Every leaf of a tree."""
    if isinstance(node, Leaf):
        return [node]
    return [leaf for c in node.children for leaf in leaves(c)]


def legend(nodes: list[Node]) -> dict[str, list[tuple[str, str]]]:
    """token -> the (term, kind) pairs it stands for, to explain a match."""
    found: dict[str, list[tuple[str, str]]] = {}
    for node in nodes:
        for leaf in leaves(node):
            pairs = found.setdefault(leaf.token, [])
            if (leaf.term, leaf.kind) not in pairs:
                pairs.append((leaf.term, leaf.kind))
    return found


def render(node: Node, dialect: str) -> str:
    """The tree as a PostgreSQL tsquery (`pg`) or an SQLite FTS5 MATCH expression (`sqlite`)."""
    if isinstance(node, Leaf):
        return node.token
    op = (" | " if dialect == "pg" else " OR ") if isinstance(node, AnyOf) else None
    if op is None:
        op = " & " if dialect == "pg" else " AND "
    return "(" + op.join(render(c, dialect) for c in node.children) + ")"


# --- which terms the index reads, and which the rows it finds are checked against ------------

# A term this common (a brand, a category, a surname's character: a share of all orders) is
# not worth reading from the index beside rarer ones ...
BROAD_SHARE = 0.01
# ... when the rarer terms alone are expected to find at most this many rows: each is then
# checked against the broad terms, instead of the index reading the broad terms' postings
# (500,000 at 10M orders for a brand on 5% of them) to intersect them with a handful.
CHECKED_ROWS = 200


@dataclass(frozen=True, slots=True)
class Shares:
    """How common the index's tokens are: the share of index rows holding each of its most
    common tokens (PostgreSQL's statistics of the index column), and the rows it holds."""

    rows: float
    common: Mapping[str, float]

    @property
    def rare(self) -> float:
        """The share taken for a token not listed: half the least common listed (as
        PostgreSQL's own estimate takes it)."""
        return min(self.common.values(), default=0.0) / 2

    def of(self, node: Node) -> float:
        """The share of rows a node is expected to match. Listed alternatives add up; the
        unlisted ones count once, as the most common of them (a term's alternatives are its
        readings as a name, an address, a product word...: most are on no order at all). A
        word that must match with others is at most as common as the least common."""
        if isinstance(node, Leaf):
            return self.common.get(node.token, self.rare)
        if isinstance(node, AllOf):
            return min(self.of(c) for c in node.children)
        listed = 0.0
        others = 0.0
        for child in node.children:
            if isinstance(child, Leaf) and child.token in self.common:
                listed += self.common[child.token]
            else:
                others = max(others, self.of(child))
        return min(1.0, listed + others)


def split(nodes: list[Node], shares: Shares | None) -> tuple[list[Node], list[Node]]:
    """The terms the index reads and the broad terms the rows it finds are checked against
    (none: the index reads every term). Every term must match either way: the split changes
    only how, never what is found."""
    if shares is None or not shares.common or len(nodes) < 2:
        return nodes, []
    each = [(node, shares.of(node)) for node in nodes]
    narrow = [node for node, share in each if share < BROAD_SHARE]
    broad = [node for node, share in each if share >= BROAD_SHARE]
    if not narrow or not broad:
        return nodes, []
    # The rows the rarer terms find together (taken as independent)
    expected = shares.rows
    for share in (share for _, share in each if share < BROAD_SHARE):
        expected *= share
    if expected > CHECKED_ROWS:
        return nodes, []
    return narrow, broad
