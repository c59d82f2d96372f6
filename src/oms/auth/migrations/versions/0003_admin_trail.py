"""The admins' audit trail: who did what to whom, when; rows are only ever added.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07
"""

from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        CREATE TABLE admin_trail (
            seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT clock_timestamp(),
            actor_id uuid NOT NULL,
            actor_name text NOT NULL,
            action text NOT NULL,
            target_kind text NOT NULL,
            target_id text NOT NULL,
            target_name text NOT NULL,
            detail text NOT NULL
        );
        CREATE INDEX admin_trail_actor ON admin_trail (actor_id, seq);
        CREATE INDEX admin_trail_target ON admin_trail (target_id, seq);

        -- Append-only: no row is changed or removed once written, not even by the service's own role.
        CREATE FUNCTION admin_trail_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            RAISE EXCEPTION 'the admin trail is append-only (% refused)', TG_OP;
        END $$;
        CREATE TRIGGER admin_trail_no_update_or_delete BEFORE UPDATE OR DELETE ON admin_trail
            FOR EACH ROW EXECUTE FUNCTION admin_trail_append_only();
        CREATE TRIGGER admin_trail_no_truncate BEFORE TRUNCATE ON admin_trail
            FOR EACH STATEMENT EXECUTE FUNCTION admin_trail_append_only();
        """
    )


def downgrade() -> None:
    op.execute(
        """
        DROP TABLE admin_trail;
        DROP FUNCTION admin_trail_append_only();
        """
    )
