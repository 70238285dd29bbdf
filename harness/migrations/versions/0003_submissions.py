"""The submission queue: submissions and their state history.

Revision ID: 0003
Revises: 0002
"""
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "submissions",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("task", sa.String(128), nullable=False),
        sa.Column("method", sa.String(256), nullable=False),
        sa.Column("label", sa.String(256), nullable=False, server_default=""),
        sa.Column("submitter", sa.String(256), nullable=False),
        sa.Column("contact", sa.String(256), nullable=True),
        sa.Column("license", sa.String(128), nullable=False, server_default=""),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("bundle_path", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("max_attempts", sa.Integer, nullable=False, server_default="3"),
        sa.Column("lease_owner", sa.String(128), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime, nullable=True),
        sa.Column("run_id", sa.String(32), sa.ForeignKey("runs.id"), nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.Column("created_at", sa.DateTime, nullable=False),
        sa.Column("updated_at", sa.DateTime, nullable=False),
    )
    op.create_index("ix_submissions_state", "submissions", ["state"])
    op.create_table(
        "submission_events",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("submission_id", sa.String(32), sa.ForeignKey("submissions.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("at", sa.DateTime, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("message", sa.Text, nullable=False, server_default=""),
        sa.Column("worker", sa.String(128), nullable=True),
    )
    op.create_index("ix_submission_events_submission_id", "submission_events", ["submission_id"])


def downgrade() -> None:
    op.drop_table("submission_events")
    op.drop_table("submissions")
