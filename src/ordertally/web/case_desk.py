"""One exception case on the workbench: its facts, SLA, order, log (who, when, from which IP)
and evidence, and the actions the API offers — assign, comment, hand off with the evidence the
type's policy asks for, resolve with a code, reopen, cancel — plus the same assign and resolve
over cases picked in the list. Form input is checked by the API's own request models; the work
is the exceptions and orders services', one transaction per case."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.responses import RedirectResponse, Response

from ordertally.auth import users
from ordertally.casework import service as casework_service
from ordertally.casework.schemas import AssignIn, CommentIn, HandOffIn, ReasonIn, ResolveIn
from ordertally.core import clock
from ordertally.core.errors import NotFound, OrdertallyError
from ordertally.core.http import client_ip
from ordertally.exceptions import registry
from ordertally.exceptions import service as exceptions_service
from ordertally.exceptions.errors import EvidenceMissing
from ordertally.exceptions.service import Who
from ordertally.orders import holds
from ordertally.web import cases, i18n, pages
from ordertally.web.i18n import N_
from ordertally.web.security import SignedIn, check_csrf, database, may, signed_in
from ordertally.web.templating import render

router = APIRouter(include_in_schema=False)

# Evidence keys the built-in policies ask for; another key shows as itself.
EVIDENCE_LABELS: dict[str, str] = {
    "refund_approval": N_("Refund approval"),
    "return_receipt": N_("Return receipt"),
}
ACTION_LABELS: dict[str, str] = {
    "opened": N_("Opened"),
    "assigned": N_("Assigned"),
    "commented": N_("Commented"),
    "handed_off": N_("Handed off"),
    "resolved": N_("Resolved"),
    "reopened": N_("Reopened"),
    "cancelled": N_("Cancelled"),
    "escalated": N_("Escalated"),
}
FLASHES: dict[str, str] = {
    "assigned": N_("The case was assigned."),
    "commented": N_("The comment was added."),
    "handed_off": N_("The case was handed off."),
    "resolved": N_("The case was resolved."),
    "reopened": N_("The case was reopened."),
    "cancelled": N_("The case was cancelled."),
}
# Which form field a request model's field belongs to, and what to say when it is bad.
FIELD_MESSAGES: dict[str, str] = {
    "assignee": N_("Choose who takes the case."),
    "text": N_("Write a comment (up to 2,000 characters)."),
    "attachments": N_("At most 20 attachment references."),
    "to_role": N_("Choose the role to hand the case to."),
    "code": N_("Resolution code: lowercase letters, digits, '.', '_' or '-'."),
    "resolution": N_("Say how the case was resolved (up to 500 characters)."),
    "reason": N_("Give a reason (up to 500 characters)."),
    "note": N_("The note is too long."),
}
BULK_LIMIT = 100


def say(request: Request, message: str, **params: Any) -> str:
    """A catalogue message in the browser's language, with its placeholders filled."""
    locale = i18n.pick_locale(request.cookies.get("ot_lang"))
    text = i18n.translations(locale).gettext(message)
    return text % params if params else text


def actor_name(user: SignedIn) -> str:
    """The name a person acts under in case logs (as in the orders' audit trail)."""
    return f"user:{user.username}"


def _who(request: Request, user: SignedIn) -> Who:
    return Who(actor_name(user), client_ip(request))


def refusal(request: Request, exc: OrdertallyError) -> str:
    """What to tell the person about a refused action, in their language."""
    if isinstance(exc, EvidenceMissing):
        keys = [say(request, EVIDENCE_LABELS.get(k, k)) for k in exc.extra.get("missing", [])]
        role = str(exc.extra.get("to_role", ""))
        return say(
            request,
            N_("Handing this case to %(role)s needs this evidence: %(keys)s."),
            role=say(request, pages.ROLE_LABELS.get(role, role)),
            keys=", ".join(keys),
        )
    if isinstance(exc, NotFound):
        return say(request, N_("There is no such case."))
    if exc.code in ("exceptions.not_active", "conflict"):
        return say(request, N_("The case is not in a state that allows this action."))
    return say(request, pages._error_text(exc))


def invalid(request: Request, exc: ValidationError) -> str:
    """The first bad field of a form, said plainly."""
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        if field in FIELD_MESSAGES:
            return say(request, FIELD_MESSAGES[field])
    return say(request, N_("Check the form's fields."))


def _evidence_of(log: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Every evidence and attachment reference the log carries, oldest first."""
    out: list[dict[str, str]] = []
    for row in log:
        detail = row.get("detail") or {}
        for key, ref in (detail.get("evidence") or {}).items():
            out.append({"kind": key, "ref": str(ref), "by": row["actor"], "at": row["at"]})
        for ref in detail.get("attachments") or []:
            out.append({"kind": "attachment", "ref": str(ref), "by": row["actor"], "at": row["at"]})
    return out


async def _context(
    request: Request, user: SignedIn, case_id: int, **extra: Any
) -> dict[str, Any] | None:
    """The page's data, or None when there is no such case."""
    async with database(request).transaction(write=False) as session:
        try:
            case = await casework_service.case_detail(session, case_id)
        except NotFound:
            return None
        policy = await exceptions_service.policy_of(session, case["type"])
        people = await users.list_users(session) if may(user, "cases.work") else []
    case["timer"] = cases.sla_timer(case, clock.now())
    evidence_keys = sorted({k for keys in policy.evidence.values() for k in keys})
    entry = registry.lookup(case["type"])
    return pages._common(
        request,
        user,
        active="cases",
        case=case,
        type_label=entry.label_zh
        if i18n.pick_locale(request.cookies.get("ot_lang")) == "zh_CN"
        else entry.label_en,
        policy=policy,
        evidence_keys=evidence_keys,
        evidence_labels=EVIDENCE_LABELS,
        evidence=_evidence_of(case["log"]),
        people=[p for p in people if p.active],
        action_labels=ACTION_LABELS,
        resolution_codes=cases.RESOLUTION_CODES,
        state_labels=cases.STATE_LABELS,
        category_labels=cases.CATEGORY_LABELS,
        severity_labels=cases.SEVERITY_LABELS,
        can_work=may(user, "cases.work"),
        active_case=case["state"] in ("open", "in_progress", "escalated"),
        case_flash=FLASHES.get(request.query_params.get("done", "")),
        path=f"/ui/cases/{case_id}",
        query="",
        **({"error": None, "error_form": None, "form": {}} | extra),
    )


@router.get("/ui/cases/{case_id}")
async def case_page(request: Request, case_id: int) -> Response:
    """One case: facts, SLA, order, evidence, log, and the actions its state allows."""
    user = await signed_in(request, "cases.read")
    context = await _context(request, user, case_id)
    if context is None:
        return _missing(request, user)
    return render(request, "case.html", context)


def _missing(request: Request, user: SignedIn) -> Response:
    context = pages._common(request, user, reason="case_missing", permission=None)
    return render(request, "forbidden.html", context, status=404)


async def _act(
    request: Request,
    case_id: int,
    form_name: str,
    model: type[BaseModel],
    values: dict[str, Any],
    work: Callable[[AsyncSession, Any, SignedIn], Awaitable[Any]],
    user: SignedIn,
    done: str,
) -> Response:
    """Check the form with the API's model, run the action in one transaction, and go back
    to the case; a refusal re-renders the page with the reason beside the form."""
    error: str | None = None
    status = 200
    try:
        body = model.model_validate(values)
        async with database(request).transaction() as session:
            await work(session, body, user)
    except ValidationError as exc:
        error, status = invalid(request, exc), 422
    except OrdertallyError as exc:
        error, status = refusal(request, exc), exc.status
    if error is None:
        return RedirectResponse(f"/ui/cases/{case_id}?done={done}", status_code=303)
    form = {k: v for k, v in values.items() if isinstance(v, str)}
    context = await _context(request, user, case_id, error=error, error_form=form_name, form=form)
    if context is None:
        return _missing(request, user)
    return render(request, "case.html", context, status=status)


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: str(v)[:2000] for k, v in form.items() if isinstance(v, str)}


@router.post("/ui/cases/{case_id}/assign")
async def assign(request: Request, case_id: int) -> Response:
    """Assign the case to the person signed in, or to another user."""
    user = await signed_in(request, "cases.work")
    await check_csrf(request, user)
    form = await _form(request)
    assignee = user.username if form.get("to") == "me" else form.get("assignee", "").strip()

    async def work(session: AsyncSession, body: AssignIn, user: SignedIn) -> None:
        await exceptions_service.assign(session, case_id, body.assignee, _who(request, user))

    return await _act(
        request, case_id, "assign", AssignIn, {"assignee": assignee}, work, user, "assigned"
    )


@router.post("/ui/cases/{case_id}/comment")
async def comment(request: Request, case_id: int) -> Response:
    """A comment, with attachment references (one per line)."""
    user = await signed_in(request, "cases.work")
    await check_csrf(request, user)
    form = await _form(request)
    refs = [line.strip()[:200] for line in form.get("attachments", "").splitlines()]
    values = {"text": form.get("text", "").strip(), "attachments": [r for r in refs if r]}

    async def work(session: AsyncSession, body: CommentIn, user: SignedIn) -> None:
        await exceptions_service.comment(
            session, case_id, body.text, body.attachments, _who(request, user)
        )

    return await _act(request, case_id, "comment", CommentIn, values, work, user, "commented")


@router.post("/ui/cases/{case_id}/hand-off")
async def hand_off(request: Request, case_id: int) -> Response:
    """Hand the case to a role, with the evidence its policy asks of that role."""
    user = await signed_in(request, "cases.work")
    await check_csrf(request, user)
    form = await _form(request)
    evidence = {
        k[3:]: v.strip()[:500] for k, v in form.items() if k.startswith("ev.") and v.strip()
    }
    values = {
        "to_role": form.get("to_role", ""),
        "evidence": evidence,
        "note": form.get("note", "").strip() or None,
    }

    async def work(session: AsyncSession, body: HandOffIn, user: SignedIn) -> None:
        await exceptions_service.hand_off(
            session, case_id, body.to_role, body.evidence, body.note, _who(request, user)
        )

    response = await _act(request, case_id, "hand_off", HandOffIn, values, work, user, "handed_off")
    return response


async def _resolve(
    request: Request, session: AsyncSession, case_id: int, body: ResolveIn, user: SignedIn
) -> None:
    # Through orders' holds: a stock-shortage hold re-reserves its stock first.
    await holds.resolve_case(
        session,
        case_id,
        actor_name(user),
        body.resolution,
        code=body.code,
        source_ip=client_ip(request),
    )


@router.post("/ui/cases/{case_id}/close")
async def resolve(request: Request, case_id: int) -> Response:
    """Resolve the case with a resolution code and a sentence."""
    user = await signed_in(request, "cases.work")
    await check_csrf(request, user)
    form = await _form(request)
    values = {
        "code": form.get("code", "").strip(),
        "resolution": form.get("resolution", "").strip(),
    }

    async def work(session: AsyncSession, body: ResolveIn, user: SignedIn) -> None:
        await _resolve(request, session, case_id, body, user)

    return await _act(request, case_id, "resolve", ResolveIn, values, work, user, "resolved")


@router.post("/ui/cases/{case_id}/reopen")
async def reopen(request: Request, case_id: int) -> Response:
    """Reopen a resolved, escalated or cancelled case (a fresh SLA clock)."""
    user = await signed_in(request, "cases.work")
    await check_csrf(request, user)
    form = await _form(request)

    async def work(session: AsyncSession, body: ReasonIn, user: SignedIn) -> None:
        await exceptions_service.reopen(session, case_id, body.reason, _who(request, user))

    values = {"reason": form.get("reason", "").strip()}
    return await _act(request, case_id, "reopen", ReasonIn, values, work, user, "reopened")


@router.post("/ui/cases/{case_id}/cancel")
async def cancel(request: Request, case_id: int) -> Response:
    """Cancel a case opened by mistake."""
    user = await signed_in(request, "cases.work")
    await check_csrf(request, user)
    form = await _form(request)

    async def work(session: AsyncSession, body: ReasonIn, user: SignedIn) -> None:
        await exceptions_service.cancel(session, case_id, body.reason, _who(request, user))

    values = {"reason": form.get("reason", "").strip()}
    return await _act(request, case_id, "cancel", ReasonIn, values, work, user, "cancelled")


# --- several cases at once, picked in the list ---------------------------------------------------


@router.post("/ui/cases/bulk")
async def bulk(request: Request) -> Response:
    """Assign or resolve the cases ticked in the list: each case in its own transaction, one
    result per case (a refused case leaves the others done)."""
    user = await signed_in(request, "cases.work")
    await check_csrf(request, user)
    form = await request.form()
    ids: list[int] = []
    for raw in form.getlist("case"):
        if isinstance(raw, str) and raw.isdigit() and int(raw) not in ids:
            ids.append(int(raw))
    action = str(form.get("bulk_action", ""))
    values: dict[str, Any]
    model: type[BaseModel]
    if action == "assign_me":
        model, values = AssignIn, {"assignee": user.username}
    elif action == "assign":
        model, values = AssignIn, {"assignee": str(form.get("assignee", "")).strip()[:100]}
    else:
        model = ResolveIn
        values = {
            "code": str(form.get("code", "")).strip()[:64],
            "resolution": str(form.get("resolution", "")).strip()[:500],
        }
    error: str | None = None
    results: list[dict[str, Any]] = []
    if action not in ("assign_me", "assign", "resolve"):
        error = say(request, N_("Choose what to do with the selected cases."))
    elif not ids:
        error = say(request, N_("Select at least one case."))
    elif len(ids) > BULK_LIMIT:
        error = say(request, N_("At most %(n)s cases at a time."), n=BULK_LIMIT)
    else:
        try:
            body = model.model_validate(values)
        except ValidationError as exc:
            error = invalid(request, exc)
        else:
            for case_id in ids:
                results.append(await _bulk_one(request, user, case_id, action, body))
    back = {k: str(form.get(k, "")) for k in ("state", "category", "type", "role", "breached")}
    return await cases.render_list(
        request, user, back, bulk_error=error, bulk_results=results, status=422 if error else 200
    )


async def _bulk_one(
    request: Request, user: SignedIn, case_id: int, action: str, body: Any
) -> dict[str, Any]:
    try:
        async with database(request).transaction() as session:
            if action == "resolve":
                await _resolve(request, session, case_id, body, user)
            else:
                await exceptions_service.assign(
                    session, case_id, body.assignee, _who(request, user)
                )
    except OrdertallyError as exc:
        return {"id": case_id, "ok": False, "reason": refusal(request, exc)}
    return {"id": case_id, "ok": True, "reason": None}
