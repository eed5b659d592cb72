"""Model canaries: the share of a model's traffic its canary version gets.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-27
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_canaries",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("canary_version", sa.String(64), nullable=False),
        sa.Column("weight", sa.Integer, nullable=False),
        sa.Column("promoted", sa.Boolean, nullable=False),
        sa.Column("rollout_id", sa.String(300), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("weight >= 0 AND weight <= 100", name="ck_model_canaries_weight"),
    )


def downgrade() -> None:
    op.drop_table("model_canaries")
