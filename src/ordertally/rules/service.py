"""Use cases of the rules domain: save (compile, check, version) rules, evaluate them on events
and on the tick, log every firing with the facts it saw, dry-run a draft over history, install
the built-in templates, keep purchase plans. Services receive a session and never commit."""

from __future__ import annotations

import csv
import io
from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ordertally.catalog import service as catalog_service
from ordertally.core import clock
from ordertally.events.registry import Envelope
from ordertally.inventory import service as inventory_service
from ordertally.orders import queries as orders_queries
from ordertally.orders import service as orders_service
from ordertally.rules import actions, facts, repository, templates
from ordertally.rules.conditions import (
    CHANNEL_SUBJECT,
    ORDER_SUBJECT,
    STOCK_SUBJECT,
    TRIGGERS,
    Compiled,
    compile_condition,
    merged,
    prepare,
)
from ordertally.rules.errors import PlanInvalid, PlanNotFound, RuleExists, RuleNotFound
from ordertally.rules.metrics import EVALUATIONS, FIRINGS
from ordertally.rules.models import PurchasePlan, PurchasePlanEvent, Rule, RuleHit, RuleVersion

if TYPE_CHECKING:
    from ordertally.orders.models import SalesOrder

# Event type -> the triggers the consumer fires for it (in-transaction triggers excluded).
EVENT_TRIGGERS: dict[str, tuple[str, ...]] = {}
for _t in TRIGGERS.values():
    for _e in () if _t.in_transaction else _t.event_types:
        EVENT_TRIGGERS.setdefault(_e, ())
        EVENT_TRIGGERS[_e] += (_t.name,)
EVENT_TYPES: tuple[str, ...] = tuple(sorted(EVENT_TRIGGERS))

PAID_TRIGGER = "order.paid"
SEEDER = "ordertally"  # who saves the seeded templates
SEEDED_CODES: tuple[str, ...] = tuple(t.code for t in templates.SEEDED)
MAX_DRY_RUN_ORDERS = 20_000
# Keyed by what was compiled, not by rule id and version: ids are reused after a restore.
_COMPILED: dict[tuple[str, str], Compiled] = {}


@dataclass(frozen=True, slots=True)
class Active:
    rule: Rule
    compiled: Compiled


def compiled_of(rule: Rule) -> Compiled:
    """A saved rule's compiled condition (cached per trigger and source)."""
    key = (rule.trigger, rule.condition)
    found = _COMPILED.get(key)
    if found is None:
        found = _COMPILED[key] = compile_condition(rule.condition, rule.trigger)
    return found


# --- saving --------------------------------------------------------------------------------------


def check_rule(trigger: str, condition: str, rule_actions: list[dict[str, Any]]) -> Compiled:
    """Compile and check a condition and its actions for a trigger (refused with the error)."""
    compiled = compile_condition(condition, trigger)
    actions.check(rule_actions, compiled.trigger.subject)
    return compiled


async def _keep_version(session: AsyncSession, rule: Rule, by: str) -> None:
    await repository.add_version(
        session,
        {
            "rule_id": rule.id,
            "version": rule.version,
            "trigger": rule.trigger,
            "condition": rule.condition,
            "actions": rule.actions,
            "enabled": rule.enabled,
            "saved_by": by,
            "saved_at": rule.updated_at,
        },
    )


async def create_rule(
    session: AsyncSession,
    *,
    code: str,
    name: str,
    trigger: str,
    condition: str,
    rule_actions: list[dict[str, Any]],
    enabled: bool,
    by: str,
    template: str | None = None,
) -> Rule:
    """Save a new rule (version 1) after compiling and checking it."""
    check_rule(trigger, condition, rule_actions)
    if await repository.by_code(session, code) is not None:
        raise RuleExists(f"a rule with code {code!r} exists", field="code")
    now = clock.now()
    rule = await repository.add(
        session,
        {
            "code": code,
            "name": name,
            "trigger": trigger,
            "condition": condition,
            "actions": actions.check(rule_actions, TRIGGERS[trigger].subject),
            "enabled": enabled,
            "version": 1,
            "template": template,
            "updated_by": by,
            "created_at": now,
            "updated_at": now,
        },
    )
    await _keep_version(session, rule, by)
    return rule


async def get_rule(session: AsyncSession, rule_id: int) -> Rule:
    """A rule by id, or RuleNotFound."""
    rule = await repository.get(session, rule_id)
    if rule is None:
        raise RuleNotFound(f"rule {rule_id} does not exist")
    return rule


async def update_rule(
    session: AsyncSession, rule_id: int, changes: dict[str, Any], by: str
) -> Rule:
    """Save a new version of a rule (name, trigger, condition, actions, enabled); a changed
    condition or action list is compiled and checked first. `changes["version"]`, when given,
    must be the version being replaced (409 otherwise)."""
    rule = await get_rule(session, rule_id)
    expected = changes.pop("version", None)
    if expected is not None and expected != rule.version:
        raise RuleExists(
            f"rule {rule_id} is at version {rule.version}, not {expected}; reload and retry",
            field="version",
        )
    trigger = changes.get("trigger", rule.trigger)
    condition = changes.get("condition", rule.condition)
    rule_actions = changes.get("actions", rule.actions)
    compiled = check_rule(trigger, condition, rule_actions)
    values = {
        "name": changes.get("name", rule.name),
        "trigger": trigger,
        "condition": condition,
        "actions": actions.check(rule_actions, compiled.trigger.subject),
        "enabled": changes.get("enabled", rule.enabled),
        "updated_by": by,
        "updated_at": clock.now(),
    }
    if not await repository.bump(session, rule.id, rule.version, values):
        raise RuleExists(f"rule {rule_id} was saved by someone else meanwhile; reload and retry")
    rule = await get_rule(session, rule_id)
    await _keep_version(session, rule, by)
    return rule


async def list_rules(session: AsyncSession) -> list[Rule]:
    """Every rule."""
    return await repository.list_rules(session)


async def versions(session: AsyncSession, rule_id: int) -> list[RuleVersion]:
    """A rule's saved versions, newest first."""
    await get_rule(session, rule_id)
    return await repository.versions(session, rule_id)


async def hits(
    session: AsyncSession, rule_id: int, *, before_id: int | None = None, limit: int = 50
) -> list[RuleHit]:
    """A rule's firings with the facts each saw, newest first."""
    await get_rule(session, rule_id)
    return await repository.hits(session, rule_id, before_id=before_id, limit=limit)


async def hit_counts(session: AsyncSession) -> dict[int, tuple[int, datetime | None]]:
    """Per rule id: how many times it fired, and when it last did (rules never fired are
    absent)."""
    return await repository.hit_counts(session)


async def _install(session: AsyncSession, template: templates.Template, by: str) -> Rule:
    return await create_rule(
        session,
        code=template.code,
        name=template.name,
        trigger=template.trigger,
        condition=templates.condition_of(template),
        rule_actions=templates.actions_of(template),
        enabled=template.enabled,
        by=by,
        template=template.code,
    )


async def install_templates(
    session: AsyncSession, by: str, codes: list[str] | None = None
) -> list[Rule]:
    """Save the built-in templates not saved yet (all, or those named), each enabled when the
    template is on by default; returns the rules added."""
    wanted = [templates.BY_CODE[c] for c in codes] if codes else list(templates.TEMPLATES)
    have = await repository.codes(session, [t.code for t in wanted])
    return [await _install(session, t, by) for t in wanted if t.code not in have]


async def _seed(session: AsyncSession, wanted: list[templates.Template]) -> list[Rule]:
    """Save seeded templates found missing (another worker may save one first: then its)."""
    out = []
    for template in wanted:
        try:
            async with session.begin_nested():
                out.append(await _install(session, template, SEEDER))
        except (IntegrityError, RuleExists):
            found = await repository.by_code(session, template.code)
            if found is not None:
                out.append(found)
    return out


# --- evaluation ----------------------------------------------------------------------------------


async def active(session: AsyncSession, trigger_names: tuple[str, ...]) -> list[Active]:
    """The enabled rules of these triggers, compiled. The seeded templates of these triggers
    (the customer flags, on by default) are saved first when they are not saved yet; one a
    merchant disabled stays disabled."""
    rules = await repository.enabled(session, also_codes=SEEDED_CODES)
    saved = {rule.code for rule in rules}
    missing = [t for t in templates.SEEDED if t.trigger in trigger_names and t.code not in saved]
    if missing:
        rules += await _seed(session, missing)
    return [
        Active(rule, compiled_of(rule))
        for rule in rules
        if rule.enabled and rule.trigger in trigger_names
    ]


def _seen(compiled: Compiled, all_facts: dict[str, Any]) -> dict[str, Any]:
    """The facts one condition names (what its firing log keeps)."""
    return {name: all_facts[name] for name in sorted(compiled.variables) if name in all_facts}


async def _fire(
    session: AsyncSession,
    item: Active,
    *,
    dedupe_key: str,
    subject: str,
    order_id: int | None,
    order_no: str | None,
    seen: dict[str, Any],
) -> int | None:
    """Log a firing (once per rule and dedupe key) and run its actions; the hit id when new."""
    hit_id = await repository.add_hit_if_absent(
        session,
        {
            "rule_id": item.rule.id,
            "rule_version": item.rule.version,
            "dedupe_key": dedupe_key[:120],
            "subject": subject[:120],
            "order_id": order_id,
            "facts": seen,
            "outcomes": [],
            "fired_at": clock.now(),
        },
    )
    if hit_id is None:
        return None
    firing = actions.Firing(
        item.rule.code, item.rule.version, hit_id, subject, order_id, order_no, seen
    )
    outcomes = await actions.run_all(session, firing, item.rule.actions)
    await repository.set_outcomes(session, hit_id, outcomes)
    FIRINGS.labels(item.rule.code).inc()
    return hit_id


async def evaluate_event(session: AsyncSession, envelope: Envelope) -> int:
    """Evaluate the enabled rules an order event triggers; returns how many fired."""
    rules = await active(session, EVENT_TRIGGERS.get(envelope.type, ()))
    if not rules:
        return 0
    order = await orders_queries.get_by_no(session, str(envelope.payload["order_no"]))
    if order is None:
        return 0
    wanted = set().union(*(r.compiled.variables for r in rules))
    return await _evaluate(
        session, rules, order, await facts.order_facts(session, order, wanted), envelope.id
    )


async def evaluate_events(session: AsyncSession, envelopes: list[Envelope]) -> int:
    """`evaluate_event` for a batch of events, in order: the rules read once, the orders and
    their facts in one query each. Once a rule fires on an order, that order's later events
    in the batch are evaluated one by one (the firing may have changed its facts)."""
    triggers = tuple(sorted({t for e in envelopes for t in EVENT_TRIGGERS.get(e.type, ())}))
    rules = await active(session, triggers)
    if not rules:
        return 0
    nos = sorted({str(e.payload["order_no"]) for e in envelopes})
    orders = {o.order_no: o for o in await orders_service.get_orders(session, nos)}
    wanted = set().union(*(r.compiled.variables for r in rules))
    subjects = list(orders.values())
    gathered = dict(
        zip(
            (o.id for o in subjects),
            await facts.orders_facts(session, subjects, wanted),
            strict=True,
        )
    )
    fired, changed = 0, set()
    for envelope in envelopes:
        order = orders.get(str(envelope.payload["order_no"]))
        event_triggers = EVENT_TRIGGERS.get(envelope.type, ())
        these = [r for r in rules if r.rule.trigger in event_triggers]
        if order is None or not these:
            continue
        if order.id in changed:
            fired += await evaluate_event(session, envelope)
            continue
        now_fired = await _evaluate(session, these, order, gathered[order.id], envelope.id)
        if now_fired:
            changed.add(order.id)
        fired += now_fired
    return fired


async def _evaluate(
    session: AsyncSession,
    rules: list[Active],
    order: SalesOrder,
    order_facts: dict[str, Any],
    event_id: str,
) -> int:
    """Evaluate some rules on an order event's facts and fire those that match."""
    context = prepare(order_facts, merged([r.compiled.reads for r in rules]))
    fired = 0
    for item in rules:
        EVALUATIONS.labels(item.rule.trigger).inc()
        if not item.compiled.matches(context):
            continue
        fired += (
            await _fire(
                session,
                item,
                dedupe_key=f"event:{event_id}",
                subject=order.order_no,
                order_id=order.id,
                order_no=order.order_no,
                seen=_seen(item.compiled, order_facts),
            )
            is not None
        )
    return fired


async def evaluate_paid(session: AsyncSession, orders: list[SalesOrder]) -> int:
    """Evaluate the enabled `order.paid` rules for orders that just became paid, inside the
    payment transition's transaction, so that their holds are open before anything can
    allocate the orders; returns how many fired. An order becomes paid at most once (the
    transition table has no way back to `pending_payment` or `closed` from `paid`), so the
    firing is unique per rule and order."""
    rules = await active(session, (PAID_TRIGGER,))
    if not rules:
        return 0
    wanted = set().union(*(r.compiled.variables for r in rules))
    reads = merged([r.compiled.reads for r in rules])
    fired = 0
    # The ORM objects still show the status read before the compare-and-set.
    gathered = await facts.orders_facts(session, orders, wanted, status="paid")
    for order, order_facts in zip(orders, gathered, strict=True):
        context = prepare(order_facts, reads)
        for item in rules:
            EVALUATIONS.labels(item.rule.trigger).inc()
            if not item.compiled.matches(context):
                continue
            fired += (
                await _fire(
                    session,
                    item,
                    dedupe_key=f"paid:{order.id}",
                    subject=order.order_no,
                    order_id=order.id,
                    order_no=order.order_no,
                    seen=_seen(item.compiled, order_facts),
                )
                is not None
            )
    return fired


async def _subjects(session: AsyncSession, subject: str) -> list[tuple[str, dict[str, Any]]]:
    if subject == STOCK_SUBJECT:
        return await facts.stock_subjects(session)
    if subject == CHANNEL_SUBJECT:
        return await facts.channel_subjects(session)
    return []


async def run_schedule(session: AsyncSession, now: datetime) -> int:
    """Evaluate the scheduled rules over their subjects; each fires at most once a UTC day per
    subject. Returns how many fired."""
    scheduled = tuple(t.name for t in TRIGGERS.values() if not t.event_types)
    rules = await active(session, scheduled)
    fired = 0
    day = clock.as_utc(now).date().isoformat()
    for subject_kind in sorted({r.compiled.trigger.subject for r in rules}):
        reads = merged(
            [r.compiled.reads for r in rules if r.compiled.trigger.subject == subject_kind]
        )
        subjects = [(s, f, prepare(f, reads)) for s, f in await _subjects(session, subject_kind)]
        for item in (r for r in rules if r.compiled.trigger.subject == subject_kind):
            for subject, subject_facts, context in subjects:
                EVALUATIONS.labels(item.rule.trigger).inc()
                if item.compiled.matches(context):
                    fired += (
                        await _fire(
                            session,
                            item,
                            dedupe_key=f"day:{day}:{subject}",
                            subject=subject,
                            order_id=None,
                            order_no=None,
                            seen=subject_facts,
                        )
                        is not None
                    )
    return fired


# --- dry run -------------------------------------------------------------------------------------


@dataclass(slots=True)
class DryRun:
    evaluated: int = 0
    matched: int = 0
    sample: list[dict[str, Any]] = field(default_factory=list)
    truncated: bool = False


async def dry_run(
    session: AsyncSession,
    *,
    trigger: str,
    condition: str,
    days: int,
    sample_size: int,
    limit: int = MAX_DRY_RUN_ORDERS,
) -> DryRun:
    """Evaluate a draft condition over the orders created in the last `days` days (order
    triggers) or over today's subjects (scheduled triggers); nothing is written."""
    compiled = compile_condition(condition, trigger)
    result = DryRun()

    def consider(subject: str, subject_facts: dict[str, Any]) -> None:
        result.evaluated += 1
        if compiled.matches(prepare(subject_facts, compiled.reads)):
            result.matched += 1
            if len(result.sample) < sample_size:
                result.sample.append({"subject": subject, "facts": _seen(compiled, subject_facts)})

    if compiled.trigger.subject != ORDER_SUBJECT:
        for subject, subject_facts in await _subjects(session, compiled.trigger.subject):
            consider(subject, subject_facts)
        return result
    since = clock.now() - timedelta(days=days)
    after: tuple[datetime, int] | None = None
    while result.evaluated < limit:
        page = await orders_service.list_orders(
            session,
            status=None,
            channel=None,
            created_from=since,
            created_to=None,
            after=after,
            limit=min(200, limit - result.evaluated),
        )
        if not page:
            break
        for order in page:
            consider(order.order_no, await facts.order_facts(session, order, compiled.variables))
        after = (page[-1].created_at, page[-1].id)
    else:
        result.truncated = True
    return result


# --- purchase plans ------------------------------------------------------------------------------

PLAN_COLUMNS = ("sku", "warehouse", "expected_date", "quantity", "reference")
MAX_PLAN_ROWS = 5_000
MAX_PLAN_QUANTITY = 10_000_000
# The built-in rule the purchase plans feed: below safety stock, nothing planned in 7 days.
STOCK_ALERT_TEMPLATE = "builtin.stock_below_safety_no_plan"
# Stock rows read per screen of stock cover, at most (the page says when it stopped short).
MAX_COVER_SCAN = 5_000
_COVER_BATCH = 500
# Why a row of a plan file or form is refused, by stable code (the screen translates them).
PLAN_REFUSALS = (
    "sku_required",
    "warehouse_required",
    "date_invalid",
    "quantity_invalid",
    "too_long",
    "sku_unknown",
    "warehouse_unknown",
    "warehouse_out_of_scope",
    "duplicate",
)


@dataclass(slots=True)
class PlanRejected:
    """A row refused, with its line in the file (1: the form), its raw cells and why."""

    line: int
    values: dict[str, str]
    reasons: list[str]


@dataclass(slots=True)
class PlanCheck:
    """Rows checked before saving: those accepted (`new` False when the same plan is saved
    already: saving it again adds nothing) and those refused with their reasons."""

    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejected: list[PlanRejected] = field(default_factory=list)


@dataclass(slots=True)
class StockCover:
    """A page of stock rows (SKU × warehouse) with the units planned in the next 7 days and
    their state under the stock alert; `next_after` resumes it, `complete` is False when the
    scan stopped at MAX_COVER_SCAN rows."""

    rows: list[dict[str, Any]]
    next_after: tuple[str, str] | None
    complete: bool
    rule: dict[str, Any]


async def _check_known(
    session: AsyncSession, skus: set[str], warehouses: set[str]
) -> tuple[set[str], set[str]]:
    """The SKUs the catalogue knows and the warehouse codes that exist, of those given."""
    known_skus = await catalog_service.known_codes(session, skus) if skus else set()
    codes = {w.code for w in await inventory_service.list_warehouses(session)}
    return known_skus, warehouses & codes


async def add_plans(
    session: AsyncSession, rows: list[dict[str, Any]], by: str, *, action: str = "added"
) -> int:
    """Save purchase plans (SKU known to the catalogue, warehouse known, quantity > 0), each
    new one in the audit trail as `action` (added or imported); returns how many were new (a
    row already saved with the same SKU, warehouse, date and reference is skipped)."""
    if not rows:
        return 0
    codes = {str(r["sku"]) for r in rows}
    warehouses = {str(r["warehouse"]) for r in rows}
    known_skus, known_warehouses = await _check_known(session, codes, warehouses)
    unknown = sorted(codes - known_skus)
    if unknown:
        raise PlanInvalid(f"unknown SKUs: {', '.join(unknown[:20])}", field="sku")
    missing = sorted(warehouses - known_warehouses)
    if missing:
        raise PlanInvalid(f"unknown warehouses: {', '.join(missing[:20])}", field="warehouse")
    now = clock.now()
    added = await repository.add_plans(
        session,
        [
            {
                "sku": str(r["sku"]),
                "warehouse_code": str(r["warehouse"]),
                "expected_date": r["expected_date"],
                "quantity": int(r["quantity"]),
                "reference": str(r.get("reference") or ""),
                "created_by": by,
                "created_at": now,
            }
            for r in rows
        ],
    )
    await repository.add_plan_events(session, [_event(p, action, by, now) for p in added])
    return len(added)


def _event(plan: PurchasePlan, action: str, by: str, at: datetime) -> dict[str, Any]:
    return {
        "plan_id": plan.id,
        "action": action,
        "sku": plan.sku,
        "warehouse_code": plan.warehouse_code,
        "expected_date": plan.expected_date,
        "quantity": plan.quantity,
        "reference": plan.reference,
        "actor": by,
        "at": at,
    }


def _plan_row(raw: dict[str, str]) -> tuple[dict[str, Any] | None, list[str]]:
    """One row's cells as a plan, or the reasons it is refused (no database needed)."""
    reasons: list[str] = []
    sku, warehouse = raw.get("sku", ""), raw.get("warehouse", "")
    reference = raw.get("reference", "")
    if not sku:
        reasons.append("sku_required")
    if not warehouse:
        reasons.append("warehouse_required")
    try:
        expected = date.fromisoformat(raw.get("expected_date", ""))
    except ValueError:
        reasons.append("date_invalid")
    quantity_text = raw.get("quantity", "")
    quantity = int(quantity_text) if quantity_text.isdecimal() and len(quantity_text) < 9 else 0
    if not 0 < quantity <= MAX_PLAN_QUANTITY:
        reasons.append("quantity_invalid")
    if len(sku) > 64 or len(warehouse) > 32 or len(reference) > 64:
        reasons.append("too_long")
    if reasons:
        return None, reasons
    return {
        "sku": sku,
        "warehouse": warehouse,
        "expected_date": expected,
        "quantity": quantity,
        "reference": reference,
    }, []


async def check_plans(
    session: AsyncSession,
    raw_rows: list[tuple[int, dict[str, str]]],
    *,
    warehouses: Collection[str] | None = None,
) -> PlanCheck:
    """Check rows of cells (line number, {column: text}) as `add_plans` would save them, row
    by row: each accepted or refused with every reason that applies (a bad cell, an unknown
    SKU or warehouse, a warehouse outside `warehouses` for a scoped user, the same plan twice
    in the rows). Nothing is written."""
    cells_of = [
        (line, {k: str(raw.get(k) or "").strip() for k in PLAN_COLUMNS}) for line, raw in raw_rows
    ]
    known_skus, known_warehouses = await _check_known(
        session,
        {c["sku"] for _, c in cells_of if 0 < len(c["sku"]) <= 64},
        {c["warehouse"] for _, c in cells_of if 0 < len(c["warehouse"]) <= 32},
    )
    saved = await repository.saved_plan_keys(session, known_skus)
    result = PlanCheck()
    seen: set[tuple[str, str, date, str]] = set()
    for line, cells in cells_of:
        plan, reasons = _plan_row(cells)
        if cells["sku"] and len(cells["sku"]) <= 64 and cells["sku"] not in known_skus:
            reasons.append("sku_unknown")
        wh = cells["warehouse"]
        if wh and len(wh) <= 32 and wh not in known_warehouses:
            reasons.append("warehouse_unknown")
        elif wh and warehouses is not None and wh not in warehouses:
            reasons.append("warehouse_out_of_scope")
        if plan is None or reasons:
            result.rejected.append(PlanRejected(line, cells, reasons))
            continue
        key = (plan["sku"], plan["warehouse"], plan["expected_date"], plan["reference"])
        if key in seen:
            result.rejected.append(PlanRejected(line, cells, ["duplicate"]))
            continue
        seen.add(key)
        result.accepted.append(plan | {"line": line, "new": key not in saved})
    return result


def plan_csv_rows(text: str) -> list[tuple[int, dict[str, str]]]:
    """The rows of a purchase-plan CSV as (line number, {column: text}) for `check_plans`;
    PlanInvalid when the header lacks a column or the file has too many rows."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [(h or "").strip() for h in reader.fieldnames or []]
    missing = [c for c in PLAN_COLUMNS[:4] if c not in header]
    if missing:
        raise PlanInvalid(f"the CSV lacks columns: {', '.join(missing)}", field="file")
    rows: list[tuple[int, dict[str, str]]] = []
    for raw in reader:
        cells = {str(k).strip(): str(v or "") for k, v in raw.items() if k is not None}
        if not any(v.strip() for v in cells.values()):
            continue  # a blank line
        rows.append((reader.line_num, cells))
        if len(rows) > MAX_PLAN_ROWS:
            raise PlanInvalid(f"at most {MAX_PLAN_ROWS} rows per file", field="file")
    return rows


async def preview_plan_csv(
    session: AsyncSession, text: str, *, warehouses: Collection[str] | None = None
) -> PlanCheck:
    """A purchase-plan CSV checked row by row (nothing written): the rows a confirm would
    save, and those refused with their reasons."""
    return await check_plans(session, plan_csv_rows(text), warehouses=warehouses)


def parse_plan_csv(text: str) -> list[dict[str, Any]]:
    """Rows of a purchase-plan CSV (header: sku,warehouse,expected_date,quantity[,reference]);
    PlanInvalid names the first bad line."""
    reader = csv.DictReader(io.StringIO(text.lstrip("\ufeff")))
    header = [h.strip() for h in reader.fieldnames or []]
    missing = [c for c in PLAN_COLUMNS[:4] if c not in header]
    if missing:
        raise PlanInvalid(f"the CSV lacks columns: {', '.join(missing)}", field="file")
    rows: list[dict[str, Any]] = []
    for line_no, raw in enumerate(reader, start=2):
        row = {k.strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        try:
            quantity = int(row["quantity"])
            expected = date.fromisoformat(row["expected_date"])
        except ValueError as exc:
            raise PlanInvalid(f"line {line_no}: {exc}", field="file", line=line_no) from exc
        if quantity <= 0 or not row["sku"] or not row["warehouse"]:
            raise PlanInvalid(
                f"line {line_no}: sku and warehouse are required, quantity must be > 0",
                field="file",
                line=line_no,
            )
        if len(row["sku"]) > 64 or len(row["warehouse"]) > 32 or len(row.get("reference", "")) > 64:
            raise PlanInvalid(f"line {line_no}: a value is too long", field="file", line=line_no)
        rows.append(
            {
                "sku": row["sku"],
                "warehouse": row["warehouse"],
                "expected_date": expected,
                "quantity": quantity,
                "reference": row.get("reference", ""),
            }
        )
        if len(rows) > MAX_PLAN_ROWS:
            raise PlanInvalid(f"at most {MAX_PLAN_ROWS} rows per file", field="file")
    return rows


async def list_plans(
    session: AsyncSession,
    *,
    sku: str | None = None,
    start: date | None = None,
    end: date | None = None,
    limit: int = 500,
) -> list[PurchasePlan]:
    """Purchase plans by expected date."""
    return await repository.plans(session, sku=sku, start=start, end=end, limit=limit)


async def plan_page(
    session: AsyncSession,
    *,
    sku_prefix: str | None = None,
    warehouses: Collection[str] | None = None,
    start: date | None = None,
    end: date | None = None,
    after: tuple[date, int] | None = None,
    limit: int = 100,
) -> list[PurchasePlan]:
    """Purchase plans by (expected date, id) in keyset pages, of SKUs starting with
    `sku_prefix`, in `warehouses` (None: all), expected within [start, end]."""
    return await repository.plan_page(
        session,
        sku_prefix=sku_prefix,
        warehouses=warehouses,
        start=start,
        end=end,
        after=after,
        limit=limit,
    )


async def get_plan(session: AsyncSession, plan_id: int) -> PurchasePlan:
    """A purchase plan, or PlanNotFound."""
    plan = await repository.get_plan(session, plan_id)
    if plan is None:
        raise PlanNotFound(f"purchase plan {plan_id} does not exist")
    return plan


async def delete_plan(session: AsyncSession, plan_id: int, *, by: str) -> PurchasePlan:
    """Delete a purchase plan (recorded in the audit trail), or PlanNotFound."""
    plan = await repository.delete_plan(session, plan_id)
    if plan is None:
        raise PlanNotFound(f"purchase plan {plan_id} does not exist")
    await repository.add_plan_events(session, [_event(plan, "deleted", by, clock.now())])
    return plan


async def plan_events(
    session: AsyncSession, *, warehouses: Collection[str] | None = None, limit: int = 20
) -> list[PurchasePlanEvent]:
    """The latest purchase plans added, imported or deleted, newest first."""
    return await repository.plan_events(session, warehouses=warehouses, limit=limit)


def _stock_alert(rules: list[Rule]) -> tuple[Compiled, dict[str, Any]]:
    """The stock alert's condition (the installed rule's, else the template's) and how the
    rule stands: not installed, on or off."""
    installed = next((r for r in rules if r.template == STOCK_ALERT_TEMPLATE), None)
    if installed is not None and installed.trigger == "schedule.stock":
        state = {"state": "on" if installed.enabled else "off", "rule_id": installed.id}
        return compiled_of(installed), state
    template = templates.BY_CODE[STOCK_ALERT_TEMPLATE]
    key = (template.trigger, template.condition)
    found = _COMPILED.get(key)
    if found is None:
        found = _COMPILED[key] = compile_condition(template.condition, template.trigger)
    return found, {"state": "absent", "rule_id": None}


def cover_state(stock: dict[str, Any], alert: Compiled) -> str:
    """A stock row's state under the stock alert: `red` when its condition holds over the row's
    facts; else `unset` (no safety stock), `covered` (below safety stock, a receipt planned
    within 7 days), `short` (below, nothing planned, yet an edited rule does not alert) or
    `ok`."""
    if alert.matches({"stock": stock}):
        return "red"
    if stock["safety_stock"] <= 0:
        return "unset"
    if stock["on_hand"] - stock["reserved"] < stock["safety_stock"]:
        return "covered" if stock["planned_7d"] > 0 else "short"
    return "ok"


async def stock_cover(
    session: AsyncSession,
    *,
    sku_prefix: str | None = None,
    warehouse: str | None = None,
    warehouses: Collection[str] | None = None,
    short_only: bool = False,
    after: tuple[str, str] | None = None,
    limit: int = 50,
) -> StockCover:
    """Stock by SKU × warehouse (the rows the stock alert evaluates, with the facts it sees:
    on hand, reserved, safety stock and the units planned in the next 7 days) and each row's
    state; `short_only`: the rows below safety stock. Reads at most MAX_COVER_SCAN rows."""
    alert, rule = _stock_alert(await repository.list_rules(session))
    rows: list[dict[str, Any]] = []
    scanned = 0
    cursor = after
    complete = True
    # Without a filter applied here, one batch of `limit` rows (and one more, to tell whether
    # there is a next page) fills the page.
    filtered = short_only or warehouse is not None or warehouses is not None
    size = _COVER_BATCH if filtered else limit + 1
    while len(rows) < limit:
        if scanned >= MAX_COVER_SCAN:
            complete = False
            break
        batch = await inventory_service.stock_table(
            session, sku_prefix=sku_prefix, after=cursor, limit=size
        )
        scanned += len(batch)
        matching = [
            r
            for r in batch
            if (warehouse is None or r["warehouse"] == warehouse)
            and (warehouses is None or r["warehouse"] in warehouses)
            and (not short_only or r["on_hand"] - r["reserved"] < r["safety_stock"])
        ]
        wanted = matching[: limit - len(rows)]
        planned = await facts.planned_7d(session, {r["sku"] for r in wanted})
        for r in wanted:
            stock = {**r, "planned_7d": planned.get((r["sku"], r["warehouse"]), 0)}
            free = r["on_hand"] - r["reserved"]
            rows.append(stock | {"free": free, "state": cover_state(stock, alert)})
        if len(batch) < size and len(matching) == len(wanted):
            cursor = None  # the table is read to its end
            break
        last = wanted[-1] if len(rows) == limit else batch[-1]
        cursor = (last["sku"], last["warehouse"])
    next_after = cursor if len(rows) == limit or not complete else None
    return StockCover(rows, next_after, complete, rule)
