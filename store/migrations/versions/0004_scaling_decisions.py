"""Predictive scaling: every decision a scaling workflow made, with its inputs, forecast and action.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "scaling_decisions",
        sa.Column("workflow_id", sa.String(300), primary_key=True),
        sa.Column("seq", sa.Integer, primary_key=True),
        sa.Column("namespace", sa.String(253), nullable=False),
        sa.Column("deployment", sa.String(253), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("mode", sa.String(32), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("data_status", sa.String(32), nullable=False),
        sa.Column("forecast_status", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("observed_rps", sa.Float, nullable=True),
        sa.Column("forecast_peak_rps", sa.Float, nullable=True),
        sa.Column("confidence", sa.Float, nullable=True),
        sa.Column("current_replicas", sa.Integer, nullable=True),
        sa.Column("ready_replicas", sa.Integer, nullable=True),
        sa.Column("reactive_need", sa.Integer, nullable=True),
        sa.Column("forecast_need", sa.Integer, nullable=True),
        sa.Column("target", sa.Integer, nullable=True),
        sa.Column("basis", sa.String(32), nullable=False),
        sa.Column("limited_by", sa.String(32), nullable=True),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("forecast", sa.JSON, nullable=False),
        sa.Column("model", sa.JSON, nullable=False),
    )
    op.create_index("ix_scaling_decisions_target", "scaling_decisions", ["namespace", "deployment", "at"])


def downgrade() -> None:
    op.drop_index("ix_scaling_decisions_target", table_name="scaling_decisions")
    op.drop_table("scaling_decisions")
