"""Users and login attempts.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE users (
            id uuid PRIMARY KEY,
            username text NOT NULL CHECK (username ~ '^[A-Za-z0-9_.-]{3,64}$'),
            password_hash text NOT NULL,
            role text NOT NULL CHECK (role IN ('customer', 'admin')),
            created_at timestamptz NOT NULL DEFAULT now()
        );
        -- 'Alice' and 'alice' are one user: no look-alike accounts.
        CREATE UNIQUE INDEX users_username_key ON users (lower(username));

        CREATE TABLE login_attempts (
            key text PRIMARY KEY,
            failures integer NOT NULL DEFAULT 0,
            last_attempt timestamptz,
            locked_until timestamptz
        );
        """
    )


def downgrade() -> None:
    op.execute("DROP TABLE login_attempts; DROP TABLE users;")
