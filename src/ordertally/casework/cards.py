"""A case's notification card: order, type, age, owner and a link, as markdown (email, JSON
webhooks, and the DingTalk card's text) and as the facts notify lays out in the WeCom and
DingTalk structured cards (notify/cards.py). Bilingual: Chinese first, English below."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from ordertally.core import clock
from ordertally.core.settings import get_settings
from ordertally.exceptions import registry
from ordertally.exceptions.models import ExceptionCase
from ordertally.notify.service import CaseFacts

HEADINGS = {
    "CaseOpened": ("新异常", "New case"),
    "CaseSlaWarning": ("即将超时", "SLA due soon"),
    "CaseSlaBreached": ("已超时", "SLA breached"),
    "CaseEscalated": ("已升级", "Escalated"),
}
SIDES = {"customer": "客户侧", "system": "系统侧", "supply_chain": "供应链"}


@dataclass(frozen=True, slots=True)
class Card:
    title: str
    markdown: str
    facts: CaseFacts


def age_text(opened: datetime, now: datetime) -> str:
    """An age as hours and minutes (e.g. "3h05m")."""
    minutes = max(0, int((now - clock.as_utc(opened)).total_seconds() // 60))
    return f"{minutes // 60}h{minutes % 60:02d}m"


def render(
    case: ExceptionCase, event_type: str, order_no: str | None, now: datetime, base_url: str
) -> Card:
    """The card of one case event; the link is absolute (the cards need one), on `base_url` or
    else the configured public base URL."""
    entry = registry.lookup(case.type)
    zh, en = HEADINGS[event_type]
    label = f"{entry.label_zh or case.type} / {entry.label_en or case.type}"
    base = base_url or get_settings().public_base_url
    link = f"{base.rstrip('/')}/api/v1/cases/{case.id}"
    due = clock.as_utc(case.due_at).isoformat() if case.due_at else "-"
    title = f"【{zh} {en}】#{case.id} {label}"
    lines = [
        f"### {title}",
        f"> 订单 Order: **{order_no or '-'}**",
        f"> 类型 Type: {label} ({SIDES.get(case.side, case.side)} {case.side})",
        f"> 严重度 Severity: {case.severity}",
        f"> 已开 Age: {age_text(case.created_at, now)}",
        f"> 负责 Owner: {case.owner_role} {case.assignee or ''}".rstrip(),
        f"> 时限 Due (UTC): {due}",
        f"[查看 Open]({link})",
    ]
    owner = f"{case.owner_role} {case.assignee or ''}".rstrip()
    markdown = "\n".join(lines)
    facts = CaseFacts(
        case_id=case.id,
        heading_zh=zh,
        heading_en=en,
        order_no=order_no,
        type_label=label,
        side=case.side,
        severity=case.severity,
        age=age_text(case.created_at, now),
        owner=owner,
        due=due,
        link=link,
        markdown=markdown,
    )
    return Card(title, markdown, facts)
