"""Limit buckets: the request and token limits of keys and tenants, shared by every API process. One row
per (scope, name, unit) holds the bucket's theoretical arrival time (GCRA): when it is full again, in
seconds since the epoch on the database's clock.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-10
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "limit_buckets",
        sa.Column("scope", sa.String(16), primary_key=True),
        sa.Column("name", sa.Text, primary_key=True),
        sa.Column("unit", sa.String(16), primary_key=True),
        sa.Column("tat", sa.Float(precision=53), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("limit_buckets")
