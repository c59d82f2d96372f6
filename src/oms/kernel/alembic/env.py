"""Alembic environment shared by every service: each service keeps only its `migrations/` versions."""

from alembic import context
from sqlalchemy import create_engine, pool, text

url = context.config.attributes["url"]
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    # Replicas may start together: one migrates, the others wait and then find nothing to do.
    connection.execute(text("SELECT pg_advisory_lock(7726001)"))
    connection.commit()
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
    connection.execute(text("SELECT pg_advisory_unlock(7726001)"))
    connection.commit()
engine.dispose()
