"""What a rule does when it fires: a small registry of actions, each checked when the rule is
saved and run inside the firing's transaction. Another domain adds one with `register()` (the
order sub-status action is added that way)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.customers import service as customers_service
from ordertally.exceptions import service as exceptions_service
from ordertally.notify import alerts
from ordertally.orders import service as orders_service
from ordertally.rules.conditions import CHANNEL_SUBJECT, ORDER_SUBJECT, STOCK_SUBJECT
from ordertally.rules.errors import ActionInvalid

ALL_SUBJECTS = frozenset({ORDER_SUBJECT, STOCK_SUBJECT, CHANNEL_SUBJECT})
MAX_ACTIONS = 10


@dataclass(frozen=True, slots=True)
class Firing:
    """One firing as its actions see it."""

    rule_code: str
    rule_version: int
    hit_id: int
    subject: str
    order_id: int | None
    order_no: str | None
    facts: dict[str, Any]


Runner = Callable[[AsyncSession, Firing, dict[str, Any]], Awaitable[dict[str, Any]]]


@dataclass(frozen=True, slots=True)
class Action:
    kind: str
    subjects: frozenset[str]
    params: dict[str, type]  # name -> type; every name is required unless in `optional`
    optional: frozenset[str]
    run: Runner


ACTIONS: dict[str, Action] = {}


def register(
    kind: str,
    run: Runner,
    *,
    params: dict[str, type] | None = None,
    optional: tuple[str, ...] = (),
    subjects: frozenset[str] = ALL_SUBJECTS,
) -> None:
    """Add an action kind (re-registering the same runner is a no-op)."""
    existing = ACTIONS.get(kind)
    if existing is not None and existing.run is not run:
        raise ValueError(f"rule action {kind!r} registered twice")
    ACTIONS[kind] = Action(kind, subjects, params or {}, frozenset(optional), run)


def check(actions: list[dict[str, Any]], subject: str) -> list[dict[str, Any]]:
    """Validate a rule's actions for its trigger's subject; returns them normalised."""
    if not actions:
        raise ActionInvalid("a rule needs at least one action", field="actions")
    if len(actions) > MAX_ACTIONS:
        raise ActionInvalid(f"at most {MAX_ACTIONS} actions", field="actions")
    out: list[dict[str, Any]] = []
    for index, given in enumerate(actions):
        where = f"actions[{index}]"
        kind = given.get("kind")
        spec = ACTIONS.get(str(kind))
        if spec is None:
            raise ActionInvalid(
                f"{where}: unknown kind {kind!r}; known: {', '.join(sorted(ACTIONS))}",
                field=where,
            )
        if subject not in spec.subjects:
            raise ActionInvalid(f"{where}: {kind} needs an order-triggered rule", field=where)
        extra = sorted(set(given) - set(spec.params) - {"kind"})
        if extra:
            raise ActionInvalid(f"{where}: unknown parameters {extra}", field=where)
        for name, kind_of in spec.params.items():
            if name not in given:
                if name in spec.optional:
                    continue
                raise ActionInvalid(f"{where}: {name} is required", field=where)
            value = given[name]
            too_long = isinstance(value, str) and not 0 < len(value) <= 200
            if not isinstance(value, kind_of) or too_long:
                raise ActionInvalid(
                    f"{where}: {name} must be a {kind_of.__name__} (strings 1-200)", field=where
                )
        if spec.kind == "customer_flag" and given["flag"] not in customers_service.FLAG_KINDS:
            raise ActionInvalid(
                f"{where}: flag must be one of {', '.join(customers_service.FLAG_KINDS)}",
                field=where,
            )
        if spec.kind == "notify" and given["target"] not in alerts.target_keys():
            raise ActionInvalid(
                f"{where}: no operations target {given['target']!r}; configured: "
                f"{', '.join(alerts.target_keys()) or 'none'}",
                field=where,
            )
        out.append(dict(given))
    return out


async def run_all(
    session: AsyncSession, firing: Firing, actions: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """Run a firing's actions in order; returns what each did."""
    outcomes = []
    for action in actions:
        spec = ACTIONS[action["kind"]]
        outcomes.append({"kind": spec.kind, **await spec.run(session, firing, action)})
    return outcomes


# --- the built-in actions ------------------------------------------------------------------------


def _detail(firing: Firing, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "rule": firing.rule_code,
        "rule_version": firing.rule_version,
        "rule_hit_id": firing.hit_id,
        "subject": firing.subject,
        "order_no": firing.order_no,
        "reason": params.get("reason", ""),
    }


async def _open(
    session: AsyncSession,
    firing: Firing,
    params: dict[str, Any],
    *,
    type: str,
    category: str,
    blocking: bool,
) -> dict[str, Any]:
    case_id = await exceptions_service.open_case(
        session,
        order_id=firing.order_id,
        category=category,
        type=type,
        blocking=blocking,
        detail=_detail(firing, params),
    )
    return {"case_id": case_id, "type": type, "blocking": blocking}


async def hold(session: AsyncSession, firing: Firing, params: dict[str, Any]) -> dict[str, Any]:
    """Hold the order for review: a blocking case (the review pool names its type)."""
    pool = str(params.get("pool", "review"))
    return await _open(session, firing, params, type=f"rule.{pool}", category="risk", blocking=True)


async def flag(session: AsyncSession, firing: Firing, params: dict[str, Any]) -> dict[str, Any]:
    """Flag the subject: a case that asks for attention and holds nothing."""
    return await _open(
        session, firing, params, type=f"rule.{params['flag']}", category="risk", blocking=False
    )


async def open_case(
    session: AsyncSession, firing: Firing, params: dict[str, Any]
) -> dict[str, Any]:
    """Open an exception case of a given type (blocking when asked)."""
    return await _open(
        session,
        firing,
        params,
        type=str(params["type"]),
        category=str(params.get("category", "rule")),
        blocking=bool(params.get("blocking", False)),
    )


async def tag(session: AsyncSession, firing: Firing, params: dict[str, Any]) -> dict[str, Any]:
    """Tag the order's buyer (nothing when the buyer is not known yet)."""
    customer_id = int((firing.facts.get("customer") or {}).get("id") or 0)
    if not customer_id and firing.order_id is not None:
        customer_id = int((await customers_service.rule_facts(session, firing.order_id))["id"])
    if not customer_id:
        return {"tagged": False, "reason": "buyer not linked yet"}
    _, created = await customers_service.add_tag(
        session, customer_id, str(params["tag"]), f"rule:{firing.rule_code}"
    )
    return {"tagged": True, "customer_id": customer_id, "new": created}


async def customer_flag(
    session: AsyncSession, firing: Firing, params: dict[str, Any]
) -> dict[str, Any]:
    """Flag the order's buyer (their profile's risk flags) and open the flag's case
    `customer.<flag>`, holding the order when `blocking` (once per order and flag)."""
    if firing.order_id is None:
        return {"flagged": False, "reason": "no order"}
    return await customers_service.raise_flag(
        session,
        firing.order_id,
        str(params["flag"]),
        _detail(firing, params),
        blocking=bool(params.get("blocking", False)),
    )


async def notify(session: AsyncSession, firing: Firing, params: dict[str, Any]) -> dict[str, Any]:
    """Plan a message to a configured operations target (WeCom, DingTalk, email...)."""
    title = f"[{firing.rule_code}] {firing.subject}"
    body = f"{params['message']}\n{title}"
    planned = await alerts.plan_alert(
        session,
        alert_id=f"rule-hit:{firing.hit_id}",
        target_key=str(params["target"]),
        title=title,
        body=body,
        order_no=firing.order_no,
    )
    return {"target": params["target"], "planned": planned}


async def set_sub_status(
    session: AsyncSession, firing: Firing, params: dict[str, Any]
) -> dict[str, Any]:
    """Set the sub-status the buyer sees on the tracking page (e.g. 海关查验中)."""
    if firing.order_id is None:
        return {"set": False, "reason": "no order"}
    value = str(params["value"]).strip() or None
    changed = await orders_service.set_sub_status(
        session, firing.order_id, value, f"rule:{firing.rule_code}"
    )
    return {"set": changed, "value": value}


register(
    "hold",
    hold,
    params={"reason": str, "pool": str},
    optional=("pool",),
    subjects=frozenset({ORDER_SUBJECT}),
)
register("flag", flag, params={"flag": str, "reason": str}, optional=("reason",))
register(
    "open_case",
    open_case,
    params={"type": str, "category": str, "blocking": bool, "reason": str},
    optional=("category", "blocking", "reason"),
)
register("tag", tag, params={"tag": str}, subjects=frozenset({ORDER_SUBJECT}))
register(
    "customer_flag",
    customer_flag,
    params={"flag": str, "reason": str, "blocking": bool},
    optional=("reason", "blocking"),
    subjects=frozenset({ORDER_SUBJECT}),
)
register("notify", notify, params={"target": str, "message": str})
register(
    "set_sub_status",
    set_sub_status,
    params={"value": str},
    subjects=frozenset({ORDER_SUBJECT}),
)
