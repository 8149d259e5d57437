"""HTTP routes of the rules domain: rules (save, version, enable, dry-run, firings, templates,
the documented facts) and purchase plans (API and CSV import). Thin; one transaction each."""

from __future__ import annotations

from datetime import date
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from ordertally.auth.api import require
from ordertally.auth.service import Principal
from ordertally.core.http import database, json_response
from ordertally.rules import actions, service, templates
from ordertally.rules.conditions import SAMPLE_FACTS, TRIGGERS
from ordertally.rules.errors import PlanInvalid, TemplateUnknown
from ordertally.rules.schemas import (
    DryRunIn,
    PlansIn,
    RuleIn,
    RulePatch,
    TemplatesIn,
    hit_doc,
    plan_doc,
    rule_doc,
    version_doc,
)

router = APIRouter(prefix="/api/v1", tags=["rules"])


@router.get("/rules", summary="Every rule")
async def list_rules(
    request: Request, _: Annotated[Principal, Depends(require("rules.read"))]
) -> Response:
    """The rules, enabled or not, by id."""
    async with database(request).transaction(write=False) as session:
        rules = await service.list_rules(session)
    return json_response({"items": [rule_doc(r) for r in rules]})


@router.post("/rules", status_code=201, summary="Save a new rule (compiled and checked)")
async def create_rule(
    request: Request,
    body: RuleIn,
    principal: Annotated[Principal, Depends(require("rules.manage"))],
) -> Response:
    """A condition that does not compile or type-check is refused with CEL's message (422
    `rule.condition_invalid`); a taken code is 409."""
    async with database(request).transaction() as session:
        rule = await service.create_rule(
            session,
            code=body.code,
            name=body.name,
            trigger=body.trigger,
            condition=body.condition,
            rule_actions=body.actions,
            enabled=body.enabled,
            by=principal.name,
        )
        doc = rule_doc(rule)
    return json_response(doc, 201)


@router.get("/rules/facts", summary="The triggers, the facts each offers, the action kinds")
async def rule_facts(
    request: Request, _: Annotated[Principal, Depends(require("rules.read"))]
) -> Response:
    """What a condition may name, as a typed sample per trigger."""
    return json_response(
        {
            "triggers": [
                {
                    "name": t.name,
                    "subject": t.subject,
                    "events": list(t.event_types),
                    "facts": SAMPLE_FACTS[t.subject],
                }
                for t in TRIGGERS.values()
            ],
            "actions": [
                {
                    "kind": a.kind,
                    "params": {n: k.__name__ for n, k in a.params.items()},
                    "optional": sorted(a.optional),
                    "subjects": sorted(a.subjects),
                }
                for a in sorted(actions.ACTIONS.values(), key=lambda a: a.kind)
            ],
        }
    )


@router.get("/rules/templates", summary="The built-in rule templates")
async def list_templates(
    request: Request, _: Annotated[Principal, Depends(require("rules.read"))]
) -> Response:
    """Each template with whether it is installed."""
    async with database(request).transaction(write=False) as session:
        installed = {r.template for r in await service.list_rules(session) if r.template}
    return json_response(
        {
            "items": [
                {
                    "code": t.code,
                    "name": t.name,
                    "trigger": t.trigger,
                    "condition": t.condition,
                    "actions": templates.actions_of(t),
                    "on_by_default": t.enabled,
                    "installed": t.code in installed,
                }
                for t in templates.TEMPLATES
            ]
        }
    )


@router.post("/rules/templates/install", summary="Install built-in templates as rules")
async def install_templates(
    request: Request,
    body: TemplatesIn,
    principal: Annotated[Principal, Depends(require("rules.manage"))],
) -> Response:
    """Save the templates not installed yet (all, or `codes`); installing twice adds nothing."""
    unknown = sorted(set(body.codes or []) - set(templates.BY_CODE))
    if unknown:
        raise TemplateUnknown(f"unknown templates: {', '.join(unknown)}", field="codes")
    async with database(request).transaction() as session:
        added = await service.install_templates(session, principal.name, body.codes)
        docs = [rule_doc(r) for r in added]
    return json_response({"installed": docs})


@router.post("/rules/dry-run", summary="Evaluate a draft rule over recent history")
async def dry_run(
    request: Request,
    body: DryRunIn,
    _: Annotated[Principal, Depends(require("rules.manage"))],
) -> Response:
    """How many orders of the last `days` days (or today's stock rows / channels) the draft
    would have matched, with a sample and the facts each matched on; writes nothing."""
    async with database(request).transaction(write=False) as session:
        result = await service.dry_run(
            session,
            trigger=body.trigger,
            condition=body.condition,
            days=body.days,
            sample_size=body.sample,
        )
    return json_response(
        {
            "evaluated": result.evaluated,
            "matched": result.matched,
            "sample": result.sample,
            "truncated": result.truncated,
        }
    )


@router.get("/rules/{rule_id}", summary="A rule with its saved versions")
async def get_rule(
    request: Request, rule_id: int, _: Annotated[Principal, Depends(require("rules.read"))]
) -> Response:
    """The current version and every earlier one."""
    async with database(request).transaction(write=False) as session:
        rule = await service.get_rule(session, rule_id)
        doc = rule_doc(rule) | {
            "versions": [version_doc(v) for v in await service.versions(session, rule_id)]
        }
    return json_response(doc)


@router.patch("/rules/{rule_id}", summary="Save a new version of a rule; enable or disable it")
async def update_rule(
    request: Request,
    rule_id: int,
    body: RulePatch,
    principal: Annotated[Principal, Depends(require("rules.manage"))],
) -> Response:
    """Every change is a new version (kept); `version` guards against a concurrent edit."""
    async with database(request).transaction() as session:
        rule = await service.update_rule(
            session, rule_id, body.model_dump(exclude_unset=True), principal.name
        )
        doc = rule_doc(rule)
    return json_response(doc)


@router.get("/rules/{rule_id}/hits", summary="A rule's firings, with the facts each saw")
async def rule_hits(
    request: Request,
    rule_id: int,
    _: Annotated[Principal, Depends(require("rules.read"))],
    before: Annotated[int | None, Query(ge=1)] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """Newest first; `before` (an id) pages back."""
    async with database(request).transaction(write=False) as session:
        found = await service.hits(session, rule_id, before_id=before, limit=limit)
    return json_response({"items": [hit_doc(h) for h in found]})


# --- purchase plans ------------------------------------------------------------------------------


@router.get("/purchase-plans", summary="Expected receipts per SKU, warehouse and date")
async def list_plans(
    request: Request,
    _: Annotated[Principal, Depends(require("inventory.read"))],
    sku: Annotated[str | None, Query(max_length=64)] = None,
    start: date | None = None,
    end: date | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> Response:
    """By expected date, optionally of one SKU and within [start, end]."""
    async with database(request).transaction(write=False) as session:
        found = await service.list_plans(session, sku=sku, start=start, end=end, limit=limit)
    return json_response({"items": [plan_doc(p) for p in found]})


@router.post("/purchase-plans", summary="Add purchase plans")
async def add_plans(
    request: Request,
    body: PlansIn,
    principal: Annotated[Principal, Depends(require("inventory.manage"))],
) -> Response:
    """Rows already saved (same SKU, warehouse, date, reference) are skipped: a retry adds
    nothing."""
    async with database(request).transaction() as session:
        added = await service.add_plans(
            session, [p.model_dump() for p in body.plans], principal.name
        )
    return json_response({"added": added, "skipped": len(body.plans) - added})


@router.post("/purchase-plans/import", summary="Import purchase plans from a CSV file")
async def import_plans(
    request: Request, principal: Annotated[Principal, Depends(require("inventory.manage"))]
) -> Response:
    """A UTF-8 CSV body with the header sku,warehouse,expected_date,quantity[,reference]; a bad
    line refuses the whole file (nothing saved)."""
    try:
        text = (await request.body()).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PlanInvalid("the file is not UTF-8", field="file") from exc
    rows = service.parse_plan_csv(text)
    async with database(request).transaction() as session:
        added = await service.add_plans(session, rows, principal.name, action="imported")
    return json_response({"added": added, "skipped": len(rows) - added})


@router.delete("/purchase-plans/{plan_id}", status_code=204, summary="Delete a purchase plan")
async def delete_plan(
    request: Request,
    plan_id: int,
    principal: Annotated[Principal, Depends(require("inventory.manage"))],
) -> Response:
    """404 when there is no such plan."""
    async with database(request).transaction() as session:
        await service.delete_plan(session, plan_id, by=principal.name)
    return Response(status_code=204)
