"""Ports picked for a system's servers (tests, benchmarks) are free and below the kernel's range for outgoing
connections, where no connection can take one before its server binds it."""

from __future__ import annotations

from oms.runtime.ports import _ephemeral_low, check_bindable, free_port, free_port_env


def test_a_free_port_is_bindable_and_below_the_ephemeral_range() -> None:
    ports = {free_port() for _ in range(20)}
    for port in ports:
        assert 20_000 <= port < _ephemeral_low()
        check_bindable("127.0.0.1", port, "a test", "OMS_TEST_PORT")
    assert len(ports) > 1  # spread, so that systems started at once rarely pick the same


def test_every_port_setting_of_a_test_system_gets_one() -> None:
    env = free_port_env()
    assert {"OMS_ORDER_PORT", "OMS_ORDER_RELAY_PORT", "OMS_PG_PORT", "OMS_NATS_PORT"} <= env.keys()
    assert all(int(port) < _ephemeral_low() for port in env.values())
