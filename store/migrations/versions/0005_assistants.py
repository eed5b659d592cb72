"""Assistants: their versions, experiments and message feedback; which version served a conversation
and each reply, and the tool calls behind a reply.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "assistants",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("workflow_id", sa.String(300), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("live_version", sa.String(32), nullable=True),
        sa.Column("latest_version", sa.String(32), nullable=False),
        sa.Column("experiment", sa.JSON, nullable=True),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "assistant_versions",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("assistant_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(32), primary_key=True),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("spec", sa.JSON, nullable=False),
        sa.Column("changed", sa.JSON, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_by", sa.String(200), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "assistant_experiments",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("assistant_id", sa.String(128), primary_key=True),
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("arms", sa.JSON, nullable=False),
        sa.Column("state", sa.String(32), nullable=False),
        sa.Column("winner", sa.String(32), nullable=True),
        sa.Column("started_by", sa.String(200), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_table(
        "message_feedback",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("message_id", sa.String(64), primary_key=True),
        sa.Column("principal", sa.String(200), primary_key=True),
        sa.Column("conversation_id", sa.String(128), nullable=False),
        sa.Column("rating", sa.Integer, nullable=False),
        sa.Column("comment", sa.Text, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint("rating IN (-1, 1)", name="ck_message_feedback_rating"),
    )
    with op.batch_alter_table("conversations") as table:
        table.add_column(sa.Column("assistant_id", sa.String(128), nullable=True))
        table.add_column(sa.Column("assistant_version", sa.String(32), nullable=True))
        table.add_column(sa.Column("experiment_id", sa.String(128), nullable=True))
        table.add_column(sa.Column("arm", sa.String(64), nullable=True))
        table.add_column(sa.Column("principal", sa.String(200), nullable=True))
    op.create_index("ix_conversations_assistant", "conversations", ["tenant", "assistant_id"])
    with op.batch_alter_table("messages") as table:
        table.add_column(sa.Column("assistant_version", sa.String(32), nullable=True))
        table.add_column(sa.Column("arm", sa.String(64), nullable=True))
        table.add_column(sa.Column("tool_calls", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("messages") as table:
        table.drop_column("tool_calls")
        table.drop_column("arm")
        table.drop_column("assistant_version")
    op.drop_index("ix_conversations_assistant", "conversations")
    with op.batch_alter_table("conversations") as table:
        for column in ("principal", "arm", "experiment_id", "assistant_version", "assistant_id"):
            table.drop_column(column)
    for name in ("message_feedback", "assistant_experiments", "assistant_versions", "assistants"):
        op.drop_table(name)
