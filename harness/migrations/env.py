"""Alembic environment: runs migrations on the engine the Store hands over.

Migrations hold a database-wide lock for their whole transaction, so processes that open a fresh or older
database at the same moment upgrade it once: the others wait, then find it at the newest revision.
"""

from alembic import context

# any constant of our own: the PostgreSQL advisory-lock id of "ARBench schema migration"
MIGRATION_LOCK_ID = 0x41524245

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite:
        # A batch migration rebuilds a table by dropping it: with foreign keys on, the drop would cascade into the
        # rows that reference it. SQLite can change this setting only outside a transaction.
        connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
        connection.commit()
    try:
        with connection.begin():
            if sqlite:
                # pysqlite begins a transaction only before DML, so DDL would run unguarded. BEGIN IMMEDIATE takes
                # the write lock now (waiting up to the busy timeout) and makes the migration one atomic step.
                connection.exec_driver_sql("BEGIN IMMEDIATE")
            elif connection.dialect.name == "postgresql":
                connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
            context.configure(
                connection=connection,
                render_as_batch=sqlite,
                transaction_per_migration=False,
            )
            with context.begin_transaction():
                context.run_migrations()
    finally:
        if sqlite:
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")
            connection.commit()
