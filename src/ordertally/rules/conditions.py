"""Rule conditions: CEL expressions over documented facts, compiled and type-checked when a
rule is saved (pure; no database).

CEL is run by `common-expression-language` (the Rust `cel` interpreter; ADR 0034). That library
parses and evaluates but has no static checker, so "type-checked" here means: the expression
parses, names only the facts its trigger offers, and evaluates to a bool over a sample of those
facts with every field present and typed (an operator applied to the wrong types, an unknown
field or a non-bool result is refused with CEL's own message). Facts are plain JSON values:
integers (money in minor units), doubles, strings, bools, lists and maps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import cel

from ordertally.rules.errors import ConditionInvalid

ORDER_SUBJECT = "order"
STOCK_SUBJECT = "stock"
CHANNEL_SUBJECT = "channel"


@dataclass(frozen=True, slots=True)
class Trigger:
    name: str
    subject: str  # what one evaluation is about: an order, a stock row, a channel account
    event_types: tuple[str, ...]  # outbox events that fire it; () = the rules tick (schedule)
    # Evaluated inside the transaction that publishes those events (not by the consumer), so
    # that its holds are open before anything else can act on the order (ADR 0034).
    in_transaction: bool = False


TRIGGERS: dict[str, Trigger] = {
    t.name: t
    for t in (
        Trigger("order.created", ORDER_SUBJECT, ("OrderCreated",)),
        # In the payment transition's transaction: a hold stops the allocation (issue 17).
        Trigger("order.paid", ORDER_SUBJECT, ("OrderPaid", "OrderReopenedPaid"), True),
        Trigger("order.shipped", ORDER_SUBJECT, ("OrderShipped",)),
        Trigger("order.refunded", ORDER_SUBJECT, ("OrderRefunded",)),
        # Published by after-sales once it lands; rules may be written for it now.
        Trigger("refund.requested", ORDER_SUBJECT, ("RefundRequested",)),
        # No event marks a stock movement or a finished pull yet: these run on the rules tick,
        # over every stock row / pull account, at most once a day per rule and subject.
        Trigger("schedule.stock", STOCK_SUBJECT, ()),
        Trigger("schedule.channel", CHANNEL_SUBJECT, ()),
    )
}

# The documented facts, by subject, as a sample with every field present and typed. The API
# serves this (GET /api/v1/rules/facts) and docs/rules.md explains each field.
_ORDER_FACTS: dict[str, Any] = {
    "order": {
        "order_no": "OT0000000001",
        "channel": "wechat_mini",
        "status": "paid",
        "currency": "CNY",
        "total_minor": 15970,
        "subtotal_minor": 15970,
        "discount_minor": 0,
        "shipping_minor": 0,
        "discount_ratio": 0.0,
        "line_count": 2,
        "quantity": 3,
        "skus": ["TEA-LJ-250"],
        "province": "上海市",
        "warehouse_codes": ["WH-1"],
        "created_at": "2026-12-04T00:00:00Z",
        "age_minutes": 0,
    },
    "lines": [
        {"sku": "TEA-LJ-250", "quantity": 2, "unit_price_minor": 5990, "amount_minor": 11980}
    ],
    "customer": {
        "known": True,
        "id": 1,
        "orders_90d": 1,
        "spend_90d_minor": 15970,
        "aov_90d_minor": 15970,
        "returns_30d": 0,
        "risk_flags": ["discount_over_limit"],
        "tags": ["vip"],
        "max_same_sku_orders_5m": 1,
    },
    "stock": {
        "TEA-LJ-250": {
            "available": 10,
            "on_hand": 10,
            "reserved": 0,
            "safety_stock": 0,
            "planned_7d": 0,
        }
    },
    "channel": {"code": "wechat_mini"},
}
_STOCK_FACTS: dict[str, Any] = {
    "stock": {
        "sku": "TEA-LJ-250",
        "warehouse": "WH-1",
        "on_hand": 10,
        "reserved": 0,
        "safety_stock": 5,
        "available": 5,
        "planned_7d": 0,
    }
}
_CHANNEL_FACTS: dict[str, Any] = {
    "channel": {
        "code": "douyin-main",
        "platform": "douyin",
        "active": True,
        "empty_pulls": 0,
        "orders_seen": 1,
        "error_count": 0,
    }
}
SAMPLE_FACTS: dict[str, dict[str, Any]] = {
    ORDER_SUBJECT: _ORDER_FACTS,
    STOCK_SUBJECT: _STOCK_FACTS,
    CHANNEL_SUBJECT: _CHANNEL_FACTS,
}


# Comprehension macros bind a variable (`lines.exists(l, l.quantity > 2)`): the library lists
# it among the expression's variables, but it is no fact.
_BOUND = re.compile(
    r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*([A-Za-z_][A-Za-z0-9_]*)\s*,"
)


# String literals (single, double, raw and triple quoted); a fact named inside one is no use.
_STRING = re.compile(
    r"[rRbB]*(?:'{3}.*?'{3}|\"{3}.*?\"{3}|'(?:[^'\\\n]|\\.)*'|\"(?:[^\"\\\n]|\\.)*\")",
    re.DOTALL,
)
_IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
WHOLE: None = None  # a projection entry: the fact is used whole (indexed, passed, iterated...)


def projection(source: str, variables: frozenset[str]) -> dict[str, frozenset[str] | None]:
    """Which fields of each fact a condition reads: `order.total_minor > 5` reads only
    `total_minor` of `order`. A fact used any other way (`stock["SKU"]`, `lines.exists(...)`,
    `size(order)`) is taken whole (None). Over-taking is harmless; the rule is that every field
    the evaluation can reach is in the projection, so converting only it cannot change a result
    (tests/rules/test_conditions.py checks that over every template and sample)."""
    code = _STRING.sub('""', source)
    out: dict[str, frozenset[str] | None] = {}
    for name in variables:
        fields: set[str] = set()
        whole = False
        for use in re.finditer(rf"(?<![\w.]){re.escape(name)}\b(\s*\.\s*({_IDENT}))?", code):
            field_name = use.group(2)
            after = code[use.end() :].lstrip()
            # `order.skus.exists(...)` reads the field `skus` whole, which is what is taken;
            # a method call on the fact itself (`customer.all(...)`) needs every field.
            if field_name is None or after.startswith("("):
                whole = True
                break
            fields.add(field_name)
        out[name] = WHOLE if whole else frozenset(fields)
    return out


def merged(projections: list[dict[str, frozenset[str] | None]]) -> dict[str, frozenset[str] | None]:
    """The projection several conditions over one set of facts need together."""
    out: dict[str, frozenset[str] | None] = {}
    for one in projections:
        for name, fields in one.items():
            if fields is WHOLE or (name in out and out[name] is WHOLE):
                out[name] = WHOLE
            else:
                out[name] = (out.get(name) or frozenset()) | fields
    return out


@dataclass(frozen=True, slots=True)
class Compiled:
    """A checked condition, ready to evaluate many times."""

    source: str
    trigger: Trigger
    program: Any  # cel.Program
    variables: frozenset[str]
    # The fields of each fact it reads (None: the whole fact), see `projection`.
    reads: dict[str, frozenset[str] | None]

    def matches(self, facts: dict[str, Any] | Any) -> bool:
        """Whether the condition holds over these facts, a dict or a `prepare`d context (an
        evaluation error is False)."""
        try:
            return self.program.execute(facts) is True
        except (RuntimeError, TypeError, ValueError, KeyError):
            return False


def prepare(facts: dict[str, Any], reads: dict[str, frozenset[str] | None] | None = None) -> Any:
    """The facts converted to CEL values once, for every rule evaluated over them: converting
    costs far more than evaluating a condition (about 3 µs per number, 7 µs per string with
    `common-expression-language` 0.10; docs/benchmarks.md, issue 17), so with `reads` (the
    merged projection of the rules to evaluate) only the facts and fields they read are
    converted."""
    context = cel.Context()
    if reads is None:
        context.update(facts)
        return context
    for name, fields in reads.items():
        if name not in facts:
            continue
        value = facts[name]
        if fields is not WHOLE and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k in fields}
        context.add_variable(name, value)
    return context


def trigger(name: str) -> Trigger:
    """The trigger called `name`, or ConditionInvalid listing the known ones."""
    found = TRIGGERS.get(name)
    if found is None:
        raise ConditionInvalid(
            f"unknown trigger {name!r}; known: {', '.join(TRIGGERS)}", field="trigger"
        )
    return found


def compile_condition(source: str, trigger_name: str) -> Compiled:
    """Parse and check a condition for a trigger; ConditionInvalid carries CEL's message."""
    spec = trigger(trigger_name)
    try:
        program = cel.compile(source)
    except (ValueError, RuntimeError, TypeError) as exc:
        raise ConditionInvalid(f"the condition does not compile: {exc}", field="condition") from exc
    sample = SAMPLE_FACTS[spec.subject]
    variables = frozenset(program.variables()) - set(_BOUND.findall(source))
    unknown = sorted(variables - set(sample))
    if unknown:
        raise ConditionInvalid(
            f"the condition names {', '.join(unknown)}, which trigger {spec.name} does not "
            f"offer; its facts are {', '.join(sorted(sample))}",
            field="condition",
        )
    try:
        result = program.execute(sample)
    except (RuntimeError, TypeError, ValueError, KeyError) as exc:
        raise ConditionInvalid(
            f"the condition does not type-check: {exc}", field="condition"
        ) from exc
    if not isinstance(result, bool):
        raise ConditionInvalid(
            f"the condition must be a bool; it gives {type(result).__name__}", field="condition"
        )
    return Compiled(source, spec, program, variables, projection(source, variables))
