"""Which credentials a component connects with: its OMS_NATS_* settings, else its identity's file."""

from __future__ import annotations

from pathlib import Path

import pytest

from oms.kernel.nats_access import NatsConfigError, access_for, kept_access
from oms.kernel.settings import Settings


def settings(tmp_path: Path, **values: object) -> Settings:
    return Settings(data_dir=tmp_path, nats_url="nats://a:1, nats://b:2", **values)  # type: ignore[arg-type]


def test_without_credentials_a_component_is_told_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(NatsConfigError, match="no NATS credentials for order: set OMS_NATS_CREDS_FILE"):
        access_for(settings(tmp_path), "order")


def test_the_identitys_kept_file_is_found_by_kind(tmp_path: Path) -> None:
    folder = tmp_path / "secrets" / "nats"
    folder.mkdir(parents=True)
    (folder / "order.nk").write_text("SU…")
    (folder / "account.password").write_text("s3cret\n")
    (folder / "backoffice.creds").write_text("-----BEGIN NATS USER JWT-----")

    order = access_for(settings(tmp_path), "order")
    assert (order.nkey_file, order.servers, order.inbox_prefix) == (
        folder / "order.nk",
        ("nats://a:1", "nats://b:2"),
        "_INBOX.order",
    )
    account = access_for(settings(tmp_path), "account")
    assert (account.user, account.password_file) == ("account", folder / "account.password")
    assert access_for(settings(tmp_path), "backoffice").creds_file == folder / "backoffice.creds"


def test_explicit_settings_win_for_the_process_but_not_for_the_children_it_hands_identities(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "secrets" / "nats"
    folder.mkdir(parents=True)
    (folder / "relay-order.nk").write_text("SU…")
    own = settings(
        tmp_path, nats_creds_file=tmp_path / "operator.creds", nats_tls_ca_file=tmp_path / "ca.pem"
    )

    assert access_for(own, "operator").creds_file == tmp_path / "operator.creds"
    child = kept_access(own, "relay-order")
    assert (child.creds_file, child.nkey_file, child.tls_ca_file) == (
        None,
        folder / "relay-order.nk",
        tmp_path / "ca.pem",
    )
    assert child.env() == {
        "OMS_NATS_URL": "nats://a:1,nats://b:2",
        "OMS_NATS_NKEY_FILE": str(folder / "relay-order.nk"),
        "OMS_NATS_TLS_CA_FILE": str(tmp_path / "ca.pem"),
    }


def test_one_kind_of_credentials_and_a_password_only_from_a_file(tmp_path: Path) -> None:
    both = settings(tmp_path, nats_nkey_file=tmp_path / "k.nk", nats_user="order")
    with pytest.raises(NatsConfigError, match="give one kind of NATS credentials"):
        access_for(both, "order")
    with pytest.raises(NatsConfigError, match="OMS_NATS_USER needs OMS_NATS_PASSWORD_FILE"):
        access_for(settings(tmp_path, nats_user="order"), "order")
    given = settings(tmp_path, nats_user="svc-order", nats_password_file=tmp_path / "pw")
    assert (access_for(given, "order").user, access_for(given, "order").identity) == ("svc-order", "order")
