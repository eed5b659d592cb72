"""Conversations keyed by (tenant, id); messages indexed by tenant; API keys.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COLUMNS = (
    "tenant, id, workflow_id, title, model, system_prompt, params, status, version, "
    "active_leaf_id, summary, message_count, created_at, updated_at"
)


def upgrade() -> None:
    # A new primary key means a new table on SQLite; copying rows works the same on PostgreSQL.
    op.create_table(
        "conversations_v2",
        sa.Column("tenant", sa.String(128), primary_key=True),
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("workflow_id", sa.String(300), nullable=False),
        sa.Column("title", sa.String(300)),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("system_prompt", sa.Text),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("active_leaf_id", sa.String(64)),
        sa.Column("summary", sa.Text),
        sa.Column("message_count", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(f"INSERT INTO conversations_v2 ({COLUMNS}) SELECT {COLUMNS} FROM conversations")
    op.drop_index("ix_conversations_tenant", "conversations")
    op.drop_index("ix_conversations_created_at", "conversations")
    op.drop_table("conversations")
    op.rename_table("conversations_v2", "conversations")
    op.create_index("ix_conversations_created_at", "conversations", ["created_at"])

    op.drop_index("ix_messages_conversation_id", "messages")
    op.create_index("ix_messages_tenant_conversation", "messages", ["tenant", "conversation_id"])

    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("roles", sa.JSON, nullable=False),
        sa.Column("key_hash", sa.String(64), nullable=False, unique=True),
        sa.Column("requests_per_minute", sa.Integer),
        sa.Column("tokens_per_minute", sa.Integer),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_api_keys_tenant", "api_keys", ["tenant"])


def downgrade() -> None:
    op.drop_table("api_keys")
    op.drop_index("ix_messages_tenant_conversation", "messages")
    op.create_index("ix_messages_conversation_id", "messages", ["conversation_id"])
    # Going back to one global id namespace only works while ids do not repeat across tenants.
    op.create_table(
        "conversations_v1",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("tenant", sa.String(128), nullable=False),
        sa.Column("workflow_id", sa.String(300), nullable=False),
        sa.Column("title", sa.String(300)),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("system_prompt", sa.Text),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("active_leaf_id", sa.String(64)),
        sa.Column("summary", sa.Text),
        sa.Column("message_count", sa.Integer, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.execute(f"INSERT INTO conversations_v1 ({COLUMNS}) SELECT {COLUMNS} FROM conversations")
    op.drop_index("ix_conversations_created_at", "conversations")
    op.drop_table("conversations")
    op.rename_table("conversations_v1", "conversations")
    op.create_index("ix_conversations_tenant", "conversations", ["tenant"])
    op.create_index("ix_conversations_created_at", "conversations", ["created_at"])
