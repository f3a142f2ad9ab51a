"""Alembic environment: migrations run on the engine the index was opened with."""

from alembic import context

from lanthorn.index.schema import metadata

engine = context.config.attributes["engine"]
# A write transaction (BEGIN IMMEDIATE on SQLite) makes concurrent start-ups queue.
with engine.connect().execution_options(lanthorn_write=True) as connection:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
