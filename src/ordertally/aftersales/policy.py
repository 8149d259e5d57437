"""After-sales policy: the windows per channel and the hand-offs per case type, as data with
defaults that settings override (ORDERTALLY_AFTERSALES_*).

Receipt confirmation windows count from the carrier's delivery event, so they are never shorter
than a platform's own (which count from shipment). Defaults follow the platforms' published
merchant rules as far as they could be checked here [secondary]: Taobao/Tmall and Pinduoduo
confirm receipt 10 days after shipment, JD and Douyin about 7 days after delivery; our own
channels and the rest use 7 days, the statutory seven-day no-reason return period
(七日无理由退货). Every value is configurable.
"""

from __future__ import annotations

from dataclasses import dataclass

from ordertally.aftersales.state_machine import CaseStatus, CaseType
from ordertally.core.settings import Settings, get_settings

DEFAULT_CHANNEL = "*"
CONFIRM_DAYS: dict[str, int] = {
    "taobao": 10,
    "pinduoduo": 10,
    "jd": 7,
    "douyin": 7,
    DEFAULT_CHANNEL: 7,
}
# Days after completion during which a buyer may still open a case (quality problems).
WINDOW_DAYS: dict[str, int] = {DEFAULT_CHANNEL: 15}
# Hours a case may stay in a status before the exception workbench shows it.
SLA_HOURS: dict[str, int] = {
    CaseStatus.REQUESTED: 48,
    CaseStatus.APPROVED: 24,
    CaseStatus.AWAITING_RETURN: 7 * 24,
    CaseStatus.RETURNED: 48,
    CaseStatus.INSPECTED: 24,
}


@dataclass(frozen=True, slots=True)
class Policy:
    confirm_days: dict[str, int]
    window_days: dict[str, int]
    refund_first: frozenset[str]
    finance_approval_above_minor: int
    sla_hours: dict[str, int]

    def confirm_days_for(self, channel: str) -> int:
        """Days after delivery before the scheduler confirms receipt on a channel."""
        return self.confirm_days.get(channel, self.confirm_days[DEFAULT_CHANNEL])

    def window_days_for(self, channel: str) -> int:
        """Days after completion during which a case may still be opened."""
        return self.window_days.get(channel, self.window_days[DEFAULT_CHANNEL])

    def refunds_before_return(self, case_type: str) -> bool:
        """Whether a case of this type is refunded before its goods are back."""
        return case_type in self.refund_first or case_type == CaseType.REFUND_ONLY

    def needs_finance(self, amount_minor: int) -> bool:
        """Whether a refund this large waits for finance's approval."""
        return 0 < self.finance_approval_above_minor < amount_minor


def current(settings: Settings | None = None) -> Policy:
    """The policy in force: defaults overridden by settings."""
    settings = settings or get_settings()
    return Policy(
        confirm_days={**CONFIRM_DAYS, **settings.aftersales_confirm_days},
        window_days={**WINDOW_DAYS, **settings.aftersales_window_days},
        refund_first=frozenset(settings.aftersales_refund_first),
        finance_approval_above_minor=settings.aftersales_finance_approval_above_minor,
        sla_hours={**{str(k): v for k, v in SLA_HOURS.items()}, **settings.aftersales_sla_hours},
    )
