"""events, jobs: indexes for the machinery's retention job (issue 21)

`machinery_purge` deletes consumers' dedupe rows and job runs by age; without an index on the
time column each tick would read the whole table.

Revision ID: 0031
Revises: 0030
Create Date: 2026-12-05 06:30:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0031"
down_revision: str | None = "0030"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_processed_event_processed_at", "processed_event", ["processed_at"], unique=False
    )
    op.create_index("ix_job_run_started_at", "job_run", ["started_at"], unique=False)


def downgrade() -> None:
    op.drop_index("ix_job_run_started_at", table_name="job_run")
    op.drop_index("ix_processed_event_processed_at", table_name="processed_event")
