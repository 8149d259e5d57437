"""exceptions: the workbench's facet counts as a ledger kept by triggers (issue 17)

Counting every case per type, category, state and role was a scan of every case (0.7-1.0 s at
a million). Triggers now append +1/-1 rows to `case_count_delta` whenever a case is inserted,
changes one of those columns or is deleted; a job folds them. PostgreSQL uses statement-level
triggers with transition tables (one grouped insert per statement, however many rows it
touched, and nothing when an update leaves the four columns alone); SQLite, row-level ones.
The (status, due_at) index now carries the facet columns, so breached and due-soon counts are
read from the index alone on PostgreSQL.

Revision ID: 0026
Revises: 0022
Create Date: 2026-12-05 03:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = "type, side, status, owner_role"

PG_TRIGGERS = (
    f"""
    CREATE FUNCTION hand_case_count_rows() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      IF TG_OP = 'INSERT' THEN
        INSERT INTO case_count_delta ({COLUMNS}, delta)
        SELECT {COLUMNS}, count(*) FROM new_rows GROUP BY {COLUMNS};
      ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO case_count_delta ({COLUMNS}, delta)
        SELECT {COLUMNS}, -count(*) FROM old_rows GROUP BY {COLUMNS};
      ELSE
        INSERT INTO case_count_delta ({COLUMNS}, delta)
        SELECT {COLUMNS}, sum(d) FROM (
          SELECT {COLUMNS}, -1 AS d FROM old_rows
          UNION ALL
          SELECT {COLUMNS}, 1 AS d FROM new_rows
        ) AS moved
        GROUP BY {COLUMNS}
        HAVING sum(d) <> 0;
      END IF;
      RETURN NULL;
    END
    $$
    """,
    "CREATE TRIGGER hand_case_count_ins AFTER INSERT ON exception_case "
    "REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION hand_case_count_rows()",
    "CREATE TRIGGER hand_case_count_del AFTER DELETE ON exception_case "
    "REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION hand_case_count_rows()",
    "CREATE TRIGGER hand_case_count_upd AFTER UPDATE ON exception_case "
    "REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows "
    "FOR EACH STATEMENT EXECUTE FUNCTION hand_case_count_rows()",
    # TRUNCATE fires no row or transition-table trigger: the ledger empties with the table.
    """
    CREATE FUNCTION hand_case_count_truncate() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
      DELETE FROM case_count_delta;
      RETURN NULL;
    END
    $$
    """,
    "CREATE TRIGGER hand_case_count_trunc AFTER TRUNCATE ON exception_case "
    "FOR EACH STATEMENT EXECUTE FUNCTION hand_case_count_truncate()",
)


def _sqlite_insert(row: str, delta: int) -> str:
    values = ", ".join(f"{row}.{c.strip()}" for c in COLUMNS.split(","))
    return f"INSERT INTO case_count_delta ({COLUMNS}, delta) VALUES ({values}, {delta});"


SQLITE_TRIGGERS = (
    "CREATE TRIGGER hand_case_count_ins AFTER INSERT ON exception_case BEGIN "
    f"{_sqlite_insert('new', 1)} END",
    "CREATE TRIGGER hand_case_count_del AFTER DELETE ON exception_case BEGIN "
    f"{_sqlite_insert('old', -1)} END",
    f"CREATE TRIGGER hand_case_count_upd AFTER UPDATE OF {COLUMNS} ON exception_case "
    "WHEN old.type IS NOT new.type OR old.side IS NOT new.side "
    "OR old.status IS NOT new.status OR old.owner_role IS NOT new.owner_role BEGIN "
    f"{_sqlite_insert('old', -1)} {_sqlite_insert('new', 1)} END",
)


def upgrade() -> None:
    op.create_table(
        "case_count_delta",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("side", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("owner_role", sa.String(length=20), nullable=False),
        sa.Column("delta", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_case_count_delta")),
    )
    # The cases that exist now, folded (the triggers take over from here).
    op.execute(
        f"INSERT INTO case_count_delta ({COLUMNS}, delta) "
        f"SELECT {COLUMNS}, count(*) FROM exception_case GROUP BY {COLUMNS}"
    )
    is_pg = op.get_bind().dialect.name == "postgresql"
    for statement in PG_TRIGGERS if is_pg else SQLITE_TRIGGERS:
        op.execute(statement)
    op.drop_index("ix_exception_case_status_due", table_name="exception_case")
    op.create_index(
        "ix_exception_case_status_due",
        "exception_case",
        ["status", "due_at"],
        unique=False,
        postgresql_include=["owner_role", "type", "side"],
    )


def downgrade() -> None:
    op.drop_index("ix_exception_case_status_due", table_name="exception_case")
    op.create_index(
        "ix_exception_case_status_due", "exception_case", ["status", "due_at"], unique=False
    )
    is_pg = op.get_bind().dialect.name == "postgresql"
    for name in ("ins", "del", "upd", "trunc"):
        on = " ON exception_case" if is_pg else ""
        op.execute(f"DROP TRIGGER IF EXISTS hand_case_count_{name}{on}")
    if is_pg:
        op.execute("DROP FUNCTION IF EXISTS hand_case_count_rows()")
        op.execute("DROP FUNCTION IF EXISTS hand_case_count_truncate()")
    op.drop_table("case_count_delta")
