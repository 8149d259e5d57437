"""Daily order tallies per channel, maintained by an outbox consumer."""

from __future__ import annotations

from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from ordertally.core.db import Base, BigId


class OrderDailyTally(Base):
    """Orders and amounts per local business day (merchant timezone), channel and currency."""

    __tablename__ = "order_daily_tally"

    day_date: Mapped[str] = mapped_column(String(10), primary_key=True)
    channel: Mapped[str] = mapped_column(String(32), primary_key=True)
    currency: Mapped[str] = mapped_column(String(3), primary_key=True)
    orders_count: Mapped[int] = mapped_column(Integer)
    total_minor: Mapped[int] = mapped_column(BigId)
