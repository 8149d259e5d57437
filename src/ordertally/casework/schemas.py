"""Request bodies of the workbench API, with limits (bad input changes nothing)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, model_validator

# Order numbers picked one by one (a page of the orders screen, or a search's matches).
MAX_PICKED = 1000
OrderNos = Annotated[
    list[Annotated[str, Field(min_length=1, max_length=64)]], Field(max_length=MAX_PICKED)
]
# The roles of auth.models.ROLES, as a type the schema can check.
Role = Literal["admin", "ops", "cs", "finance", "warehouse"]


class AssignIn(BaseModel):
    assignee: str = Field(min_length=1, max_length=100)


class CommentIn(BaseModel):
    text: str = Field(min_length=1, max_length=2000)
    attachments: list[str] = Field(default_factory=list, max_length=20)


class HandOffIn(BaseModel):
    to_role: Role
    evidence: dict[str, str] = Field(default_factory=dict, max_length=20)
    note: str | None = Field(default=None, max_length=2000)


class ResolveIn(BaseModel):
    code: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9_.-]+$")
    resolution: str = Field(min_length=1, max_length=500)


class ReasonIn(BaseModel):
    reason: str = Field(min_length=1, max_length=500)


class PolicyIn(BaseModel):
    sla_minutes: int = Field(ge=1, le=60 * 24 * 90)
    warn_minutes: int = Field(ge=0, le=60 * 24 * 2)
    owner_role: Role
    severity: Literal["low", "normal", "high", "critical"]
    evidence: dict[Role, list[str]] = Field(default_factory=dict)
    escalate_to: Role | None = None
    escalate_after_minutes: int | None = Field(default=None, ge=1, le=60 * 24 * 90)
    notify_on_open: bool = False
    channels: list[Literal["ops", "sms"]] = Field(default=["ops"], max_length=2)


class BatchIn(BaseModel):
    action: Literal[
        "message",
        "coupon",
        "tag",
        "sub_status",
        "remark",
        "open_case",
        "resolve_cases",
        "hold",
        "release",
        "cancel_unpaid",
    ]
    target: Literal["cases", "orders"]
    filters: dict[str, str | bool | OrderNos | None] = Field(default_factory=dict, max_length=16)
    params: dict[str, Any] = Field(default_factory=dict, max_length=16)

    @model_validator(mode="after")
    def _check(self) -> BatchIn:
        needs = {
            "message": ("campaign",),
            "coupon": ("campaign", "amount_minor"),
            "tag": ("tag",),
            "sub_status": ("sub_status",),
            "remark": ("remark",),
            "open_case": ("case_type",),
            "resolve_cases": ("case_type",),
        }.get(self.action, ())
        missing = [k for k in needs if k not in self.params]
        if missing:
            raise ValueError(f"{self.action} needs params {missing}")
        allowed = CASE_FILTERS if self.target == "cases" else ORDER_FILTERS
        unknown = sorted(set(self.filters) - allowed)
        if unknown:
            raise ValueError(f"unknown filters {unknown}; known: {sorted(allowed)}")
        shapes = [
            k
            for k, v in self.filters.items()
            if v is not None and isinstance(v, list) != (k in LIST_FILTERS)
        ]
        if shapes:
            raise ValueError(f"filters {sorted(shapes)}: lists for {sorted(LIST_FILTERS)} only")
        if self.action == "cancel_unpaid" and self.target != "orders":
            raise ValueError("cancel_unpaid selects orders")
        return self


CASE_FILTERS = {
    "type", "category", "state", "role", "assignee", "order_no", "sku", "warehouse", "channel",
    "tag", "created_from", "created_to", "breached",
}  # fmt: skip
ORDER_FILTERS = {
    "status", "sku", "warehouse", "channel", "tag", "case_type", "created_from", "created_to",
    "order_nos", "channels",
}  # fmt: skip
LIST_FILTERS = {"order_nos", "channels"}


def parse_dates(filters: dict[str, Any]) -> dict[str, Any]:
    """Filters as the repository takes them (dates parsed)."""
    out = dict(filters)
    for key in ("created_from", "created_to"):
        if isinstance(out.get(key), str):
            out[key] = datetime.fromisoformat(out[key])
    return out
