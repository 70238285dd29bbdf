"""Runs know their request key, repeats and owner process.

- `run_key`: unique per request (the full signature hash; `<hash>.rN` for the N-th deliberate repeat), so two
  identical requests cannot both insert a run. NULL for rows that are not idempotent by signature (submissions,
  reported figures, and `score` runs stored before their signature named the samples' contents).
- `repeat_of`: the first run of a deliberate repeat (`--repeat`).
- `host`, `pid`, `heartbeat_at`: which process works on a `running` run and when it last said so; a run whose
  process is gone reads as `abandoned` and is resumed by the next identical request.

Existing `run` rows are backfilled: per signature the earliest finished run (else the earliest) keeps the plain
key, and the others become repeats of it, numbered in creation order, so no row is lost or merged.

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # plain ADD COLUMN and CREATE INDEX: on SQLite no table is rebuilt (a rebuild drops `runs`, which must
    # never happen to a table others reference); `repeat_of` is therefore a plain indexed id, not a foreign key
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("run_key", sa.String(40), nullable=True))
        batch.add_column(sa.Column("repeat_of", sa.String(32), nullable=True))
        batch.add_column(sa.Column("host", sa.String(255), nullable=True))
        batch.add_column(sa.Column("pid", sa.Integer, nullable=True))
        batch.add_column(sa.Column("heartbeat_at", sa.DateTime, nullable=True))
    op.create_index("uq_runs_run_key", "runs", ["run_key"], unique=True)
    op.create_index("ix_runs_repeat_of", "runs", ["repeat_of"])
    _backfill_keys()


def _backfill_keys() -> None:
    conn = op.get_bind()
    runs = sa.table("runs", sa.column("id"), sa.column("kind"), sa.column("status"), sa.column("signature_hash"),
                    sa.column("created_at"), sa.column("run_key"), sa.column("repeat_of"))
    submissions = sa.table("submissions", sa.column("run_id"))
    rows = conn.execute(
        sa.select(runs.c.id, runs.c.status, runs.c.signature_hash)
        .where(runs.c.kind == "run", runs.c.signature_hash != "",
               runs.c.id.not_in(sa.select(submissions.c.run_id).where(submissions.c.run_id.is_not(None))))
        .order_by(runs.c.created_at, runs.c.id)
    ).all()
    groups: dict[str, list] = {}
    for row in rows:
        groups.setdefault(row.signature_hash, []).append(row)
    for sig_hash, group in groups.items():
        first = next((r for r in group if r.status == "finished"), group[0])
        conn.execute(runs.update().where(runs.c.id == first.id).values(run_key=sig_hash))
        others = [r for r in group if r.id != first.id]
        for n, row in enumerate(others, start=1):
            conn.execute(runs.update().where(runs.c.id == row.id)
                         .values(run_key=f"{sig_hash}.r{n}", repeat_of=first.id))


def downgrade() -> None:
    op.drop_index("ix_runs_repeat_of", "runs")
    op.drop_index("uq_runs_run_key", "runs")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("heartbeat_at")
        batch.drop_column("pid")
        batch.drop_column("host")
        batch.drop_column("repeat_of")
        batch.drop_column("run_key")
