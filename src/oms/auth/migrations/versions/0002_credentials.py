"""Disabled users and revoked tokens.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-06
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE users
            ADD COLUMN disabled boolean NOT NULL DEFAULT false,
            ADD COLUMN tokens_valid_after timestamptz;

        -- What every service reads to refuse revoked tokens: one token (token_id, a sign-out) or every token
        -- of a user issued before not_before (a password change, a disable). Kept until no token it refuses
        -- can still be alive.
        CREATE TABLE revocations (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            token_id text,
            not_before timestamptz,
            expires_at timestamptz NOT NULL,
            CHECK ((token_id IS NULL) <> (not_before IS NULL))
        );
        CREATE INDEX revocations_expires_at ON revocations (expires_at);
        CREATE INDEX login_attempts_last_attempt ON login_attempts (last_attempt);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP INDEX login_attempts_last_attempt;
        DROP TABLE revocations;
        ALTER TABLE users DROP COLUMN tokens_valid_after, DROP COLUMN disabled;
        """
    )
