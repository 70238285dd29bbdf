"""Provenance source, display label and the comparability (evaluation) signature on runs.

Existing rows are backfilled: `score` runs were submitted samples, everything else was reproduced;
their evaluation signature is their full signature (the conservative choice: they compare only
with identical settings).

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("primary_metric", sa.String(64), nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("source", sa.String(16), nullable=False, server_default="reproduced"))
        batch.add_column(sa.Column("label", sa.String(256), nullable=False, server_default=""))
        batch.add_column(sa.Column("eval_signature", sa.Text, nullable=False, server_default=""))
        batch.add_column(sa.Column("eval_signature_hash", sa.String(16), nullable=False, server_default=""))
        batch.create_index("ix_runs_eval_signature_hash", ["eval_signature_hash"])
    op.execute("UPDATE runs SET source = 'submitted' WHERE kind = 'score'")
    op.execute("UPDATE runs SET eval_signature = signature, eval_signature_hash = signature_hash")


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_index("ix_runs_eval_signature_hash")
        batch.drop_column("eval_signature_hash")
        batch.drop_column("eval_signature")
        batch.drop_column("label")
        batch.drop_column("source")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("primary_metric")
