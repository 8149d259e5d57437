"""Routing decisions as pure functions: fewest splits, then the merchant's ranking."""

from ordertally.inventory.routing import Candidate, plan

STRATEGY = ["fewest_splits", "nearest", "priority", "cost"]


def _c(wid: int, code: str, km: float, stock: dict[str, int], priority: int = 1) -> Candidate:
    return Candidate(wid, code, priority, 1.0, km, stock)


def test_one_warehouse_that_holds_everything_beats_nearer_partial_ones() -> None:
    near = _c(1, "NEAR", 10, {"A": 5})
    far = _c(2, "FAR", 900, {"A": 5, "B": 5})
    result = plan({"A": 2, "B": 1}, [near, far], STRATEGY, "上海市")
    assert result.ok
    assert result.allocations == {(2, "A"): 2, (2, "B"): 1}
    assert result.explanation["splits"] == 1
    assert result.explanation["chosen"][0]["warehouse"] == "FAR"
    assert "one parcel" in result.explanation["chosen"][0]["reason"]


def test_nearest_wins_among_complete_candidates_then_priority() -> None:
    a = _c(1, "A", 1200, {"X": 9})
    b = _c(2, "B", 30, {"X": 9}, priority=5)
    c = _c(3, "C", 30, {"X": 9}, priority=1)
    result = plan({"X": 3}, [a, b, c], STRATEGY, "上海市")
    assert result.allocations == {(3, "X"): 3}
    assert [x["warehouse"] for x in result.explanation["candidates"]] == ["C", "B", "A"]


def test_priority_first_when_the_merchant_says_so() -> None:
    a = _c(1, "A", 1200, {"X": 9}, priority=0)
    b = _c(2, "B", 30, {"X": 9}, priority=5)
    result = plan({"X": 3}, [a, b], ["fewest_splits", "priority", "nearest"], "上海市")
    assert result.allocations == {(1, "X"): 3}


def test_split_uses_fewest_warehouses_and_adds_up() -> None:
    cands = [_c(1, "W1", 10, {"S": 20}), _c(2, "W2", 20, {"S": 20}), _c(3, "W3", 5, {"S": 10})]
    result = plan({"S": 35}, cands, STRATEGY, "上海市")
    assert result.ok and result.explanation["splits"] == 2
    assert sum(result.allocations.values()) == 35
    assert result.allocations == {(1, "S"): 20, (2, "S"): 15}


def test_shortfall_names_the_skus() -> None:
    result = plan({"A": 3, "B": 1}, [_c(1, "W", 1, {"A": 2, "B": 1})], STRATEGY, "上海市")
    assert not result.ok
    assert result.shortfall == {"A": 1}
    assert result.explanation["shortfall"] == {"A": 1}


def test_unstocked_sku_is_a_shortfall() -> None:
    result = plan({"GHOST": 1}, [], STRATEGY, "上海市")
    assert result.shortfall == {"GHOST": 1}
