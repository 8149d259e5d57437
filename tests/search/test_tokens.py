"""The readings a name is indexed under (pure functions of search/tokens.py): every reading of
a polyphonic surname within the cap, and near-miss keys that match what a caller types."""

from __future__ import annotations

from ordertally.search import tokens as tk


def _readings(name: str) -> list[str]:
    return [v for k, v in tk.name_pairs(name) if k == "py"]


def test_every_reading_of_the_surname_comes_before_the_given_names_rarer_ones() -> None:
    # Given 单娜平: 单 dan/chan/shan, 娜 na/nuo, 平 ping/pian/bing/beng (24 readings, cap 16)
    readings = _readings("单娜平")
    # Then the cap keeps every surname reading with the given name's usual one, first
    assert len(readings) == tk.MAX_READINGS
    assert readings[:3] == ["dannaping", "channaping", "shannaping"]
    # And the initials of the surname read shan are indexed too
    assert ("pi", "snp") in set(tk.name_pairs("单娜平"))


def test_a_name_without_polyphonic_characters_has_one_reading() -> None:
    assert _readings("张三") == ["zhangsan"]
    assert _readings("曾单") == [
        "cengdan",
        "zengdan",
        "cengchan",
        "zengchan",
        "cengshan",
        "zengshan",
    ]


def test_near_miss_keys_fold_what_callers_drop_or_add() -> None:
    # -ng heard as -n, even before a syllable starting with g (王国 wang guo, 永贵 yong gui)
    assert tk.near("wanguo") == tk.near("wangguo")
    assert tk.near("liyongui") == tk.near("liyonggui")
    # zh/z, sh/s, n/l
    assert tk.near("zhangshan") == tk.near("zangsan") == tk.near("zhangsan")
    assert tk.near("nisan") == tk.near("lisan")
    # but different names stay apart
    assert tk.near("wangguo") != tk.near("wangguan")
