"""Who gets which database connection (runtime/roles.py), and their URLs, without a server."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from oms.kernel.settings import Settings
from oms.runtime.roles import connection_urls, connections, connections_of, database_url
from oms.runtime.supervisor import System


def test_each_child_of_oms_up_gets_only_its_own_connections() -> None:
    children = [name for name, _, _ in System(Settings(), Console()).child_specs()]
    assert {child: connections_of(child) for child in children} == {
        "auth": ["auth"],
        "order": ["order"],
        "account": ["account"],
        "market": ["market"],
        "backoffice": ["audit_order", "audit_account"],
        "relay-order": ["order_relay"],
        "relay-account": ["account_relay"],
    }


def test_every_connection_is_a_setting_of_its_own() -> None:
    assert [c.setting for c in connections()] == [
        "OMS_AUTH_DATABASE_URL",
        "OMS_ORDER_DATABASE_URL",
        "OMS_ACCOUNT_DATABASE_URL",
        "OMS_MARKET_DATABASE_URL",
        "OMS_ORDER_RELAY_DATABASE_URL",
        "OMS_ACCOUNT_RELAY_DATABASE_URL",
        "OMS_AUDIT_ORDER_DATABASE_URL",
        "OMS_AUDIT_ACCOUNT_DATABASE_URL",
    ]
    assert {c.role.name for c in connections(("auth",))} == {"oms_auth"}


def test_a_role_url_keeps_the_server_and_its_options_and_quotes_the_credentials() -> None:
    admin = "postgresql://postgres:s%40cret@db.example:6543/postgres?sslmode=require"
    assert database_url(admin, "order", role="oms_order", password="p@ss/word:") == (
        "postgresql://oms_order:p%40ss%2Fword%3A@db.example:6543/order?sslmode=require"
    )
    assert (
        database_url(admin, "account")
        == "postgresql://postgres:s%40cret@db.example:6543/account?sslmode=require"
    )


def test_the_audit_uses_one_password_for_both_databases(tmp_path: Path) -> None:
    urls = connection_urls("postgresql://oms:x@127.0.0.1:5/postgres", tmp_path, connections())
    audit_passwords = {urls[name].split("@")[0] for name in ("audit_order", "audit_account")}
    assert len(audit_passwords) == 1
    # auth, order, account, market, 2 relays, audit
    assert len({url.split("@")[0] for url in urls.values()}) == 7
