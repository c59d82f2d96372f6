"""Every URL a setting does not give is derived from the same host and port settings: moving a port moves
every URL that points at it (OMS_NATS_PORT included)."""

from __future__ import annotations

import pytest

from oms.kernel.settings import Settings


@pytest.fixture(autouse=True)
def no_oms_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in [n for n in os.environ if n.startswith("OMS_")]:
        monkeypatch.delenv(name)


def test_defaults_point_at_the_default_ports() -> None:
    s = Settings()
    assert (s.nats_url, s.auth_url, s.order_url, s.account_url) == (
        "nats://127.0.0.1:14222",
        "http://127.0.0.1:668",
        "http://127.0.0.1:666",
        "http://127.0.0.1:667",
    )


def test_ports_from_the_environment_move_the_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, port in {"NATS": 24222, "AUTH": 8668, "ORDER": 8666, "ACCOUNT": 8667}.items():
        monkeypatch.setenv(f"OMS_{name}_PORT", str(port))
    s = Settings()
    assert (s.nats_url, s.auth_url, s.order_url, s.account_url) == (
        "nats://127.0.0.1:24222",
        "http://127.0.0.1:8668",
        "http://127.0.0.1:8666",
        "http://127.0.0.1:8667",
    )
    assert "nats_url" not in s.model_fields_set  # derived, not given: `oms dlq` still asks the running system


def test_a_given_url_wins_over_the_port(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMS_NATS_PORT", "24222")
    monkeypatch.setenv("OMS_NATS_URL", "nats://broker-1:4222,nats://broker-2:4222")
    assert Settings().nats_url == "nats://broker-1:4222,nats://broker-2:4222"
    assert Settings(auth_url="https://auth.example").auth_url == "https://auth.example"


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:668"),  # noqa: S104  (listening everywhere: reached on the loopback)
        ("::", "http://[::1]:668"),
        ("10.1.2.3", "http://10.1.2.3:668"),
        ("fd00::5", "http://[fd00::5]:668"),
    ],
)
def test_the_host_a_url_is_derived_from(host: str, url: str) -> None:
    assert Settings(host=host).auth_url == url
