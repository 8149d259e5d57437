"""The rules screen (规则): the rules with their state, version and firings; the editor
(trigger, CEL condition, actions) whose save compiles and checks the condition and shows the
refusal beside the field; enable and disable; the version history; a dry run over the last N
days; the built-in templates; the firing log. Every read and write is the rules service's,
exactly as the API calls it."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import APIRouter, Request
from pydantic import ValidationError
from starlette.datastructures import FormData
from starlette.responses import RedirectResponse, Response

from ordertally.core.errors import OrdertallyError
from ordertally.rules import actions, templates
from ordertally.rules import service as rules_service
from ordertally.rules.conditions import SAMPLE_FACTS, TRIGGERS
from ordertally.rules.errors import (
    ActionInvalid,
    ConditionInvalid,
    RuleExists,
    RuleNotFound,
    TemplateUnknown,
)
from ordertally.rules.schemas import DryRunIn, RuleIn, RulePatch, hit_doc, rule_doc, version_doc
from ordertally.web import pages
from ordertally.web.case_desk import actor_name, say
from ordertally.web.i18n import N_
from ordertally.web.security import SignedIn, check_csrf, database, may, signed_in
from ordertally.web.templating import render

router = APIRouter(include_in_schema=False)

TRIGGER_LABELS: dict[str, str] = {
    "order.created": N_("Order created"),
    "order.paid": N_("Order paid"),
    "order.shipped": N_("Order shipped"),
    "order.refunded": N_("Order refunded"),
    "refund.requested": N_("Refund requested"),
    "schedule.stock": N_("Every stock row, daily"),
    "schedule.channel": N_("Every channel account, daily"),
}
KIND_LABELS: dict[str, str] = {
    "hold": N_("Hold for review"),
    "flag": N_("Flag (open a non-blocking case)"),
    "open_case": N_("Open a case of a type"),
    "tag": N_("Tag the buyer"),
    "notify": N_("Notify an operations target"),
    "set_sub_status": N_("Set the buyer-visible sub-status"),
}
PARAM_LABELS: dict[str, str] = {
    "reason": N_("Reason"),
    "pool": N_("Review pool"),
    "flag": N_("Flag"),
    "type": N_("Case type"),
    "category": N_("Category"),
    "blocking": N_("Blocks the order"),
    "tag": N_("Tag"),
    "target": N_("Target"),
    "message": N_("Message"),
    "value": N_("Sub-status"),
}
FLASHES: dict[str, str] = {
    "created": N_("The rule was saved (version 1)."),
    "saved": N_("A new version of the rule was saved."),
    "enabled": N_("The rule is enabled."),
    "disabled": N_("The rule is disabled."),
    "installed": N_("The built-in templates were installed."),
}
FIELD_MESSAGES: dict[str, str] = {
    "code": N_("Code: lowercase letters, digits, '.', '_' or '-' (up to 64)."),
    "name": N_("Give the rule a name (up to 200 characters)."),
    "trigger": N_("Choose a trigger."),
    "condition": N_("Write a condition (up to 2,000 characters)."),
    "actions": N_("Give the rule at least one action."),
    "days": N_("Days: 1 to 90."),
}
HITS_SHOWN = 50
# A condition to start from, per subject (CEL, shown under the facts).
EXAMPLES: dict[str, str] = {
    "order": "order.total_minor > 100000 && customer.orders_90d == 0",
    "stock": "stock.available < stock.safety_stock && stock.planned_7d == 0",
    "channel": "channel.active && channel.empty_pulls >= 5",
}


def _read_actions(form: FormData) -> list[dict[str, Any]]:
    """The action rows of the editor (`a<i>.kind`, `a<i>.<param>`), blank rows left out."""
    out: list[dict[str, Any]] = []
    for i in range(actions.MAX_ACTIONS + 1):
        kind = str(form.get(f"a{i}.kind", "")).strip()
        if not kind:
            continue
        spec = actions.ACTIONS.get(kind)
        row: dict[str, Any] = {"kind": kind}
        for name, kind_of in (spec.params if spec else {}).items():
            raw = form.get(f"a{i}.{name}")
            if kind_of is bool:
                row[name] = raw is not None
            elif isinstance(raw, str) and raw.strip():
                row[name] = raw.strip()[:200]
        out.append(row)
    return out


def _rows(rule_actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The editor's rows: the rule's actions and one blank row to add another."""
    rows = [dict(a) for a in rule_actions][: actions.MAX_ACTIONS]
    if len(rows) < actions.MAX_ACTIONS:
        rows.append({"kind": ""})
    return rows


def _specs() -> dict[str, dict[str, Any]]:
    """Each action kind's parameters, for the editor: name -> (is a checkbox, optional)."""
    return {
        kind: {
            name: {"bool": kind_of is bool, "optional": name in spec.optional}
            for name, kind_of in spec.params.items()
        }
        for kind, spec in sorted(actions.ACTIONS.items())
    }


def _common(request: Request, user: SignedIn, **extra: Any) -> dict[str, Any]:
    return pages._common(
        request,
        user,
        active="rules",
        trigger_labels=TRIGGER_LABELS,
        kind_labels=KIND_LABELS,
        param_labels=PARAM_LABELS,
        specs=_specs(),
        can_manage=may(user, "rules.manage"),
        rules_flash=FLASHES.get(request.query_params.get("done", "")),
        **extra,
    )


@router.get("/ui/rules")
async def rules_page(request: Request) -> Response:
    """Every rule with its state, version and firings; the built-in templates."""
    user = await signed_in(request, "rules.read")
    async with database(request).transaction(write=False) as session:
        rules = await rules_service.list_rules(session)
        counts = await rules_service.hit_counts(session)
    installed = {r.template for r in rules if r.template}
    context = _common(
        request,
        user,
        rules=[rule_doc(r) | {"hits": counts.get(r.id, (0, None))} for r in rules],
        templates=[
            {
                "code": t.code,
                "name": t.name,
                "trigger": t.trigger,
                "condition": t.condition,
                "on": t.enabled,
                "installed": t.code in installed,
            }
            for t in templates.TEMPLATES
        ],
        missing_templates=len(templates.TEMPLATES) - len(installed & set(templates.BY_CODE)),
    )
    return render(request, "rules.html", context)


def _draft(form: FormData | None, rule: dict[str, Any] | None) -> dict[str, Any]:
    """What the editor shows: the posted form, else the saved rule, else a blank rule."""
    if form is not None:
        return {
            "code": str(form.get("code", ""))[:64],
            "name": str(form.get("name", ""))[:200],
            "trigger": str(form.get("trigger", ""))[:32],
            "condition": str(form.get("condition", ""))[:2000],
            "actions": _read_actions(form),
            "enabled": form.get("enabled") is not None,
            "days": str(form.get("days", "7"))[:3],
        }
    if rule is not None:
        return rule | {"days": "7"}
    return {
        "code": "",
        "name": "",
        "trigger": "order.created",
        "condition": "",
        "actions": [],
        "enabled": False,
        "days": "7",
    }


async def _editor(
    request: Request,
    user: SignedIn,
    rule_id: int | None,
    *,
    form: FormData | None = None,
    errors: dict[str, str] | None = None,
    dry: dict[str, Any] | None = None,
    status: int = 200,
) -> Response:
    """The editor of a new rule (`rule_id` None) or of a saved one, with its versions and
    firings."""
    rule = versions = hits = None
    if rule_id is not None:
        async with database(request).transaction(write=False) as session:
            try:
                saved = await rules_service.get_rule(session, rule_id)
            except RuleNotFound:
                context = pages._common(request, user, reason="rule_missing", permission=None)
                return render(request, "forbidden.html", context, status=404)
            rule = rule_doc(saved)
            versions = [version_doc(v) for v in await rules_service.versions(session, rule_id)]
            hits = [
                hit_doc(h) for h in await rules_service.hits(session, rule_id, limit=HITS_SHOWN)
            ]
    draft = _draft(form, rule)
    context = _common(
        request,
        user,
        rule=rule,
        draft=draft,
        rows=_rows(draft["actions"]),
        versions=versions,
        hits=hits,
        errors=errors or {},
        dry=dry,
        **_facts_of(draft["trigger"]),
        path=f"/ui/rules/{rule_id}" if rule_id else "/ui/rules/new",
        query="",
    )
    block = "dryrun" if dry is not None and request.headers.get("hx-request") else None
    return render(request, "rule_edit.html", context, status=status, block=block)


def _facts_of(trigger_name: str) -> dict[str, Any]:
    """The documented facts a trigger offers, as the editor's side panel shows them."""
    trigger = TRIGGERS.get(trigger_name)
    facts = SAMPLE_FACTS[trigger.subject] if trigger else {}
    return {
        "facts_example": EXAMPLES.get(trigger.subject, "") if trigger else "",
        "facts_trigger": trigger.name if trigger else "",
        "facts_json": orjson.dumps(facts, option=orjson.OPT_INDENT_2).decode(),
    }


@router.get("/ui/rules/facts")
async def facts_panel(request: Request, trigger: str = "") -> Response:
    """The facts panel for the trigger the editor now names (htmx)."""
    user = await signed_in(request, "rules.read")
    context = _common(request, user, **_facts_of(trigger[:32]))
    return render(request, "rule_edit.html", context, block="facts")


@router.get("/ui/rules/new")
async def new_rule_page(request: Request) -> Response:
    """A blank editor."""
    user = await signed_in(request, "rules.manage")
    return await _editor(request, user, None)


@router.get("/ui/rules/action-fields")
async def action_fields(request: Request, i: int = 0) -> Response:
    """One action row's parameter fields for the kind its select now names (htmx)."""
    user = await signed_in(request, "rules.manage")
    i = min(max(i, 0), actions.MAX_ACTIONS)
    kind = request.query_params.get(f"a{i}.kind", "")
    context = _common(request, user, row={"kind": kind if kind in actions.ACTIONS else ""}, i=i)
    return render(request, "rule_edit.html", context, block="action_fields")


@router.get("/ui/rules/{rule_id}")
async def rule_page(request: Request, rule_id: int) -> Response:
    """A rule: the editor (or, for readers, its text), the versions and the firing log."""
    user = await signed_in(request, "rules.read")
    return await _editor(request, user, rule_id)


def _errors(request: Request, exc: Exception) -> dict[str, str]:
    """A refusal as messages by editor field."""
    if isinstance(exc, ValidationError):
        out: dict[str, str] = {}
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else ""
            if field in FIELD_MESSAGES and field not in out:
                out[field] = say(request, FIELD_MESSAGES[field])
        return out or {"form": say(request, N_("Check the form's fields."))}
    assert isinstance(exc, OrdertallyError)
    field = str(exc.extra.get("field", ""))
    if isinstance(exc, ConditionInvalid):
        key = "trigger" if field == "trigger" else "condition"
        return {key: say(request, N_("Refused: %(detail)s"), detail=exc.detail)}
    if isinstance(exc, ActionInvalid):
        return {"actions": say(request, N_("Refused: %(detail)s"), detail=exc.detail)}
    if isinstance(exc, RuleExists) and field == "code":
        return {"code": say(request, N_("A rule with this code exists."))}
    if isinstance(exc, RuleExists):
        return {"form": say(request, N_("The rule was saved by someone else meanwhile. Reload."))}
    return {"form": say(request, pages._error_text(exc))}


@router.post("/ui/rules")
async def create_rule(request: Request) -> Response:
    """Save a new rule: compiled and checked, refused beside the field that is wrong."""
    user = await signed_in(request, "rules.manage")
    await check_csrf(request, user)
    form = await request.form()
    draft = _draft(form, None)
    try:
        body = RuleIn.model_validate({k: draft[k] for k in RuleIn.model_fields})
        async with database(request).transaction() as session:
            rule = await rules_service.create_rule(
                session,
                code=body.code,
                name=body.name,
                trigger=body.trigger,
                condition=body.condition,
                rule_actions=body.actions,
                enabled=body.enabled,
                by=actor_name(user),
            )
            rule_id = rule.id
    except (ValidationError, OrdertallyError) as exc:
        status = 422 if isinstance(exc, ValidationError) else exc.status
        return await _editor(
            request, user, None, form=form, errors=_errors(request, exc), status=status
        )
    return RedirectResponse(f"/ui/rules/{rule_id}?done=created", status_code=303)


@router.post("/ui/rules/dry-run")
async def dry_run(request: Request) -> Response:
    """Evaluate the editor's draft over the last N days; nothing is written. htmx gets the
    result block alone."""
    user = await signed_in(request, "rules.manage")
    await check_csrf(request, user)
    form = await request.form()
    draft = _draft(form, None)
    raw_id = str(form.get("rule_id", ""))
    rule_id = int(raw_id) if raw_id.isdigit() else None
    result: dict[str, Any]
    try:
        body = DryRunIn.model_validate(
            {"trigger": draft["trigger"], "condition": draft["condition"], "days": draft["days"]}
        )
        async with database(request).transaction(write=False) as session:
            run = await rules_service.dry_run(
                session,
                trigger=body.trigger,
                condition=body.condition,
                days=body.days,
                sample_size=body.sample,
            )
        result = {
            "evaluated": run.evaluated,
            "matched": run.matched,
            "sample": run.sample,
            "truncated": run.truncated,
            "days": body.days,
            "errors": {},
        }
    except (ValidationError, OrdertallyError) as exc:
        result = {"errors": _errors(request, exc)}
    return await _editor(request, user, rule_id, form=form, dry=result)


@router.post("/ui/rules/templates/install")
async def install_templates(request: Request) -> Response:
    """Install the built-in templates not installed yet (all, or the one named)."""
    user = await signed_in(request, "rules.manage")
    await check_csrf(request, user)
    form = await request.form()
    code = str(form.get("code", "")).strip()
    if code and code not in templates.BY_CODE:
        raise TemplateUnknown(f"unknown template {code!r}", field="codes")
    async with database(request).transaction() as session:
        await rules_service.install_templates(session, actor_name(user), [code] if code else None)
    return RedirectResponse("/ui/rules?done=installed", status_code=303)


@router.post("/ui/rules/{rule_id}")
async def save_rule(request: Request, rule_id: int) -> Response:
    """Save a new version of a rule (compiled and checked first; `version` guards against a
    concurrent edit)."""
    user = await signed_in(request, "rules.manage")
    await check_csrf(request, user)
    form = await request.form()
    draft = _draft(form, None)
    version = str(form.get("version", ""))
    try:
        body = RulePatch.model_validate(
            {
                "version": version if version.isdigit() else None,
                "name": draft["name"],
                "trigger": draft["trigger"],
                "condition": draft["condition"],
                "actions": draft["actions"],
            }
        )
        async with database(request).transaction() as session:
            await rules_service.update_rule(
                session, rule_id, body.model_dump(exclude_unset=True), actor_name(user)
            )
    except RuleNotFound:
        context = pages._common(request, user, reason="rule_missing", permission=None)
        return render(request, "forbidden.html", context, status=404)
    except (ValidationError, OrdertallyError) as exc:
        status = 422 if isinstance(exc, ValidationError) else exc.status
        return await _editor(
            request, user, rule_id, form=form, errors=_errors(request, exc), status=status
        )
    return RedirectResponse(f"/ui/rules/{rule_id}?done=saved", status_code=303)


@router.post("/ui/rules/{rule_id}/enabled")
async def set_enabled(request: Request, rule_id: int) -> Response:
    """Switch a rule on or off (a new version, like any save)."""
    user = await signed_in(request, "rules.manage")
    await check_csrf(request, user)
    form = await request.form()
    on = str(form.get("enabled", "")) == "1"
    version = str(form.get("version", ""))
    try:
        async with database(request).transaction() as session:
            await rules_service.update_rule(
                session,
                rule_id,
                {"enabled": on, "version": int(version) if version.isdigit() else None},
                actor_name(user),
            )
    except RuleNotFound:
        context = pages._common(request, user, reason="rule_missing", permission=None)
        return render(request, "forbidden.html", context, status=404)
    except OrdertallyError as exc:
        return await _editor(
            request, user, rule_id, errors=_errors(request, exc), status=exc.status
        )
    back = "/ui/rules" if form.get("back") == "list" else f"/ui/rules/{rule_id}"
    return RedirectResponse(f"{back}?done={'enabled' if on else 'disabled'}", status_code=303)
