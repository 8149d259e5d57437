"""`python -m bench.search_segment`: Chinese segmentation speed on order text, jieba (pure
Python, the reference) against rjieba (the jieba-rs binding search uses), with the same user
dictionary, in search mode; and how often they cut the same text the same way."""

from __future__ import annotations

import logging
import random
import statistics
import time

from bench.search_data import ADDRESSES, PRODUCTS
from ordertally.search.tokens import USER_DICT


def texts(n: int) -> list[str]:
    """Addresses and product titles as the generator writes them."""
    rng = random.Random(1)
    out = []
    for _ in range(n):
        province, city, districts, streets = rng.choice(ADDRESSES)
        out.append(
            f"{province}{city}{rng.choice(districts)}{rng.choice(streets)}{rng.randrange(999)}号"
        )
        out.append(rng.choice(PRODUCTS)[1])
    return out


def main() -> None:
    import jieba
    import rjieba

    jieba.setLogLevel(logging.WARNING)
    jieba.load_userdict(str(USER_DICT))
    fast = rjieba.Jieba()
    for line in USER_DICT.read_text(encoding="utf-8").splitlines():
        word, freq, tag = line.split()
        fast.add_word(word, int(freq), tag)
    sample = texts(20_000)
    chars = sum(len(t) for t in sample)
    jieba.lcut_for_search(sample[0])  # load the dictionary before timing
    results: dict[str, list[float]] = {"jieba": [], "rjieba": []}
    for _ in range(5):
        for name, cut in (("jieba", jieba.lcut_for_search), ("rjieba", fast.cut_for_search)):
            started = time.perf_counter()
            for t in sample:
                cut(t)
            results[name].append(len(sample) / (time.perf_counter() - started))
    same = sum(sorted(jieba.lcut_for_search(t)) == sorted(fast.cut_for_search(t)) for t in sample)
    j, r = (statistics.median(results[k]) for k in ("jieba", "rjieba"))
    print(
        f"{len(sample)} texts ({chars / len(sample):.0f} chars avg): jieba {j:,.0f} texts/s, "
        f"rjieba {r:,.0f} texts/s ({r / j:.1f}x); same cut for {same / len(sample):.1%}"
    )


if __name__ == "__main__":
    main()
