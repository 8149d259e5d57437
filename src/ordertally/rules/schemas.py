"""Pydantic inputs and outputs of the rules domain."""

from __future__ import annotations

from datetime import date
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ordertally.core import clock
from ordertally.rules.models import PurchasePlan, Rule, RuleHit, RuleVersion

Code = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Condition = Annotated[str, StringConstraints(min_length=1, max_length=2000)]
Trigger = Annotated[str, StringConstraints(min_length=1, max_length=32)]
ActionList = Annotated[list[dict[str, Any]], Field(min_length=1, max_length=10)]


class RuleIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    code: Code
    name: Name
    trigger: Trigger
    condition: Condition
    actions: ActionList
    enabled: bool = False


class RulePatch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int | None = Field(default=None, ge=1)  # the version being replaced, if checked
    name: Name | None = None
    trigger: Trigger | None = None
    condition: Condition | None = None
    actions: ActionList | None = None
    enabled: bool | None = None


class DryRunIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    trigger: Trigger
    condition: Condition
    days: int = Field(default=7, ge=1, le=90)
    sample: int = Field(default=20, ge=0, le=100)


class TemplatesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    codes: list[Code] | None = Field(default=None, max_length=50)


class PlanIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    warehouse: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    expected_date: date
    quantity: int = Field(gt=0, le=10_000_000)
    reference: Annotated[str, StringConstraints(max_length=64)] = ""


class PlansIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    plans: Annotated[list[PlanIn], Field(min_length=1, max_length=5000)]


def _iso(value: Any) -> str | None:
    return clock.as_utc(value).isoformat().replace("+00:00", "Z") if value else None


def rule_doc(rule: Rule) -> dict[str, Any]:
    """A rule's JSON."""
    return {
        "id": rule.id,
        "code": rule.code,
        "name": rule.name,
        "trigger": rule.trigger,
        "condition": rule.condition,
        "actions": rule.actions,
        "enabled": rule.enabled,
        "version": rule.version,
        "template": rule.template,
        "updated_by": rule.updated_by,
        "created_at": _iso(rule.created_at),
        "updated_at": _iso(rule.updated_at),
    }


def version_doc(v: RuleVersion) -> dict[str, Any]:
    """One saved version of a rule."""
    return {
        "version": v.version,
        "trigger": v.trigger,
        "condition": v.condition,
        "actions": v.actions,
        "enabled": v.enabled,
        "saved_by": v.saved_by,
        "saved_at": _iso(v.saved_at),
    }


def hit_doc(h: RuleHit) -> dict[str, Any]:
    """One firing, with the facts it saw and what its actions did."""
    return {
        "id": h.id,
        "rule_version": h.rule_version,
        "subject": h.subject,
        "facts": h.facts,
        "outcomes": h.outcomes,
        "fired_at": _iso(h.fired_at),
    }


def plan_doc(p: PurchasePlan) -> dict[str, Any]:
    """A purchase plan's JSON."""
    return {
        "id": p.id,
        "sku": p.sku,
        "warehouse": p.warehouse_code,
        "expected_date": p.expected_date.isoformat(),
        "quantity": p.quantity,
        "reference": p.reference,
        "created_by": p.created_by,
        "created_at": _iso(p.created_at),
    }
