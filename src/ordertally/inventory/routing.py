"""Choosing warehouses for an order: fewest splits first, then the merchant's ranking
(nearest, priority, cost by default). Pure functions: the service feeds them availability and
turns the plan into conditional reservations."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

CRITERIA = ("fewest_splits", "nearest", "priority", "cost")
# Beyond this many candidate warehouses, fewest-splits falls back to a greedy cover.
EXACT_SEARCH_LIMIT = 12


@dataclass(frozen=True, slots=True)
class Candidate:
    warehouse_id: int
    code: str
    priority: int
    cost_factor: float
    distance_km: float | None
    available: dict[str, int]


@dataclass(slots=True)
class Plan:
    # (warehouse_id, sku) -> quantity
    allocations: dict[tuple[int, str], int] = field(default_factory=dict)
    shortfall: dict[str, int] = field(default_factory=dict)
    explanation: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.shortfall


def _rank_key(candidate: Candidate, strategy: list[str]) -> tuple[float, ...]:
    key: list[float] = []
    for criterion in strategy:
        if criterion == "nearest":
            key.append(candidate.distance_km if candidate.distance_km is not None else 1e9)
        elif criterion == "priority":
            key.append(candidate.priority)
        elif criterion == "cost":
            key.append(candidate.cost_factor)
    key.append(candidate.warehouse_id)
    return tuple(key)


def _covers(group: tuple[Candidate, ...], demand: dict[str, int]) -> bool:
    return all(sum(c.available.get(sku, 0) for c in group) >= qty for sku, qty in demand.items())


def _fill(
    group: tuple[Candidate, ...] | list[Candidate], demand: dict[str, int]
) -> tuple[dict[tuple[int, str], int], dict[str, int]]:
    allocations: dict[tuple[int, str], int] = {}
    shortfall: dict[str, int] = {}
    for sku, qty in sorted(demand.items()):
        remaining = qty
        for candidate in group:
            take = min(candidate.available.get(sku, 0), remaining)
            if take > 0:
                allocations[(candidate.warehouse_id, sku)] = take
                remaining -= take
            if remaining == 0:
                break
        if remaining:
            shortfall[sku] = remaining
    return allocations, shortfall


def plan(
    demand: dict[str, int],
    candidates: list[Candidate],
    strategy: list[str],
    ship_to: str,
) -> Plan:
    """Allocate `demand` (sku -> units) over candidates; explain every choice."""
    ranked = sorted(
        (c for c in candidates if any(c.available.get(sku, 0) > 0 for sku in demand)),
        key=lambda c: _rank_key(c, strategy),
    )
    chosen: tuple[Candidate, ...] | list[Candidate] | None = None
    method = "ranked"
    if "fewest_splits" in strategy and ranked:
        if len(ranked) <= EXACT_SEARCH_LIMIT:
            method = "fewest_splits"
            for size in range(1, len(ranked) + 1):
                chosen = next(
                    (g for g in itertools.combinations(ranked, size) if _covers(g, demand)), None
                )
                if chosen is not None:
                    break
        else:
            method = "fewest_splits_greedy"
            chosen = _greedy_cover(ranked, demand)
    if chosen is None:
        chosen = ranked
    allocations, shortfall = _fill(chosen, demand)
    used = {wid for wid, _ in allocations}
    result = Plan(allocations, shortfall)
    result.explanation = {
        "strategy": strategy,
        "method": method,
        "ship_to": ship_to,
        "splits": len(used),
        "candidates": [
            {
                "warehouse": c.code,
                "rank": i + 1,
                "distance_km": round(c.distance_km, 1) if c.distance_km is not None else None,
                "priority": c.priority,
                "cost_factor": c.cost_factor,
                "can_fulfil_alone": _covers((c,), demand),
            }
            for i, c in enumerate(ranked)
        ],
        "chosen": [
            {
                "warehouse": c.code,
                "units": {
                    sku: q for (wid, sku), q in sorted(allocations.items()) if wid == c.warehouse_id
                },
                "reason": _reason(c, ranked, demand, len(used), strategy),
            }
            for c in chosen
            if c.warehouse_id in used
        ],
        "shortfall": shortfall,
    }
    return result


def _greedy_cover(ranked: list[Candidate], demand: dict[str, int]) -> list[Candidate]:
    remaining = dict(demand)
    picked: list[Candidate] = []
    pool = list(ranked)
    while any(remaining.values()) and pool:
        best = max(
            pool, key=lambda c: sum(min(c.available.get(s, 0), q) for s, q in remaining.items())
        )
        if sum(min(best.available.get(s, 0), q) for s, q in remaining.items()) == 0:
            break
        picked.append(best)
        pool.remove(best)
        for sku, qty in remaining.items():
            remaining[sku] = max(0, qty - best.available.get(sku, 0))
    return sorted(picked, key=lambda c: ranked.index(c))


def _reason(
    candidate: Candidate,
    ranked: list[Candidate],
    demand: dict[str, int],
    splits: int,
    strategy: list[str],
) -> str:
    parts: list[str] = []
    if splits == 1:
        parts.append("holds every line, so the order ships in one parcel")
    else:
        parts.append(f"no single warehouse holds every line; {splits} together do")
    rank = ranked.index(candidate) + 1
    ranking = [c for c in strategy if c != "fewest_splits"]
    if ranking:
        detail = f"ranked {rank} of {len(ranked)} by {', then '.join(ranking)}"
        if candidate.distance_km is not None and "nearest" in ranking:
            detail += f" ({candidate.distance_km:.0f} km)"
        parts.append(detail)
    return "; ".join(parts)
