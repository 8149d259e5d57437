"""casework: exception case side/SLA/owner columns, case log and policies, order tags, coupons,
batch actions and their audit rows, the order's buyer-visible sub-status

Revision ID: 0014
Revises: 0012
Create Date: 2026-12-04 23:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("exception_case") as batch:
        batch.drop_constraint("status_known", type_="check")
        batch.create_check_constraint(
            "status_known",
            "status IN ('open', 'in_progress', 'resolved', 'escalated', 'cancelled')",
        )
        batch.add_column(
            sa.Column("side", sa.String(length=16), nullable=False, server_default="system")
        )
        batch.add_column(
            sa.Column("severity", sa.String(length=8), nullable=False, server_default="normal")
        )
        batch.add_column(
            sa.Column("owner_role", sa.String(length=20), nullable=False, server_default="ops")
        )
        batch.add_column(sa.Column("assignee", sa.String(length=100), nullable=True))
        batch.add_column(sa.Column("due_at", TS, nullable=True))
        batch.add_column(sa.Column("announced_at", TS, nullable=True))
        batch.add_column(sa.Column("warned_at", TS, nullable=True))
        batch.add_column(sa.Column("breached_at", TS, nullable=True))
        batch.add_column(sa.Column("escalated_at", TS, nullable=True))
        batch.add_column(sa.Column("resolution_code", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("updated_at", TS, nullable=True))
        batch.create_check_constraint(
            "side_known", "side IN ('customer', 'system', 'supply_chain')"
        )
        batch.create_index("ix_exception_case_status_due", ["status", "due_at"], unique=False)
        batch.create_index("ix_exception_case_created_id", ["created_at", "id"], unique=False)
        batch.create_index("ix_exception_case_announced", ["announced_at", "id"], unique=False)
        batch.create_index(
            "ix_exception_case_facets", ["status", "type", "side", "owner_role"], unique=False
        )
    # Cases open before the clock existed are not announced again.
    op.execute("UPDATE exception_case SET announced_at = created_at")
    with op.batch_alter_table("sales_order") as batch:
        batch.add_column(sa.Column("sub_status", sa.String(length=64), nullable=True))
    op.create_table(
        "exception_log",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("case_id", ID, nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("note", sa.String(length=2000), nullable=True),
        sa.Column("detail", JSON, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["case_id"],
            ["exception_case.id"],
            name=op.f("fk_exception_log_case_id_exception_case"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_exception_log")),
    )
    op.create_index("ix_exception_log_case_id", "exception_log", ["case_id", "id"], unique=False)
    op.create_table(
        "case_policy",
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("sla_minutes", sa.Integer(), nullable=False),
        sa.Column("warn_minutes", sa.Integer(), nullable=False),
        sa.Column("owner_role", sa.String(length=20), nullable=False),
        sa.Column("severity", sa.String(length=8), nullable=False),
        sa.Column("evidence", JSON, nullable=False),
        sa.Column("escalate_to", sa.String(length=20), nullable=True),
        sa.Column("escalate_after_minutes", sa.Integer(), nullable=True),
        sa.Column("notify_on_open", sa.Boolean(), nullable=False),
        sa.Column("channels", JSON, nullable=False),
        sa.Column("updated_at", TS, nullable=False),
        sa.Column("updated_by", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("type", name=op.f("pk_case_policy")),
    )
    op.create_table(
        "order_tag",
        sa.Column("order_id", ID, nullable=False),
        sa.Column("tag", sa.String(length=64), nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["sales_order.id"],
            name=op.f("fk_order_tag_order_id_sales_order"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("order_id", "tag", name=op.f("pk_order_tag")),
    )
    op.create_index("ix_order_tag_tag", "order_tag", ["tag", "order_id"], unique=False)
    op.create_table(
        "coupon",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("order_id", ID, nullable=False),
        sa.Column("campaign", sa.String(length=64), nullable=False),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("amount_minor", sa.BigInteger(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.ForeignKeyConstraint(
            ["order_id"],
            ["sales_order.id"],
            name=op.f("fk_coupon_order_id_sales_order"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_coupon")),
        sa.UniqueConstraint("code", name=op.f("uq_coupon_code")),
        sa.UniqueConstraint("order_id", "campaign", name=op.f("uq_coupon_order_id_campaign")),
    )
    op.create_table(
        "batch_action",
        sa.Column("id", ID, autoincrement=True, nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("target", sa.String(length=8), nullable=False),
        sa.Column("filters", JSON, nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("processed", sa.Integer(), nullable=False),
        sa.Column("changed", sa.Integer(), nullable=False),
        sa.Column("cursor", sa.BigInteger(), nullable=False),
        sa.Column("created_by", sa.String(length=100), nullable=False),
        sa.Column("source_ip", sa.String(length=64), nullable=True),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("started_at", TS, nullable=True),
        sa.Column("finished_at", TS, nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_action")),
    )
    op.create_index("ix_batch_action_state", "batch_action", ["state", "id"], unique=False)
    op.create_table(
        "batch_audit",
        sa.Column("batch_id", ID, nullable=False),
        sa.Column("order_id", sa.BigInteger(), nullable=False),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("detail", JSON, nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batch_action.id"],
            name=op.f("fk_batch_audit_batch_id_batch_action"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("batch_id", "order_id", name=op.f("pk_batch_audit")),
    )


def downgrade() -> None:
    op.drop_table("batch_audit")
    op.drop_index("ix_batch_action_state", table_name="batch_action")
    op.drop_table("batch_action")
    op.drop_table("coupon")
    op.drop_index("ix_order_tag_tag", table_name="order_tag")
    op.drop_table("order_tag")
    op.drop_table("case_policy")
    op.drop_index("ix_exception_log_case_id", table_name="exception_log")
    op.drop_table("exception_log")
    with op.batch_alter_table("sales_order") as batch:
        batch.drop_column("sub_status")
    with op.batch_alter_table("exception_case") as batch:
        batch.drop_index("ix_exception_case_facets")
        batch.drop_index("ix_exception_case_announced")
        batch.drop_index("ix_exception_case_created_id")
        batch.drop_index("ix_exception_case_status_due")
        batch.drop_constraint("side_known", type_="check")
        for column in (
            "updated_at", "resolution_code", "escalated_at", "breached_at", "warned_at",
            "announced_at", "due_at", "assignee", "owner_role", "severity", "side",
        ):  # fmt: skip
            batch.drop_column(column)
        batch.drop_constraint("status_known", type_="check")
        batch.create_check_constraint("status_known", "status IN ('open', 'resolved')")
