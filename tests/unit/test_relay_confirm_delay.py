"""How long the relay holds acknowledged events: NATS durations and the settings that choose the delay."""

from __future__ import annotations

import pytest

from oms.kernel.settings import Settings, confirm_delay_for, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("100ms", 0.1),
        ("1s", 1.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1m30s", 90.0),
        ("1.5s", 1.5),
        (".5s", 0.5),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("10ns", 1e-8),
        ("1h2m3s4ms", 3723.004),
        (" 1s ", 1.0),
        ("0", 0.0),
    ],
)
def test_nats_durations_parse_to_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "1", "s", "1 s", "1x", "-1s", "1s2", "always", "1.2.3s", "1S"])
def test_anything_else_is_not_a_duration(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


def test_fsync_per_message_needs_no_delay() -> None:
    assert confirm_delay_for("always") == 0.0


@pytest.mark.parametrize(("interval", "delay"), [("1s", 2.0), ("100ms", 0.2), ("2m", 240.0)])
def test_an_interval_sync_delays_confirmation_by_two_intervals(interval: str, delay: float) -> None:
    assert confirm_delay_for(interval) == pytest.approx(delay)


def test_the_delay_follows_the_sync_interval_unless_set() -> None:
    assert Settings(nats_sync_interval="always").relay_hold_seconds() == 0.0
    assert Settings(nats_sync_interval="500ms").relay_hold_seconds() == pytest.approx(1.0)
    assert Settings(nats_sync_interval="1s", relay_confirm_delay=0).relay_hold_seconds() == 0.0
    assert Settings(nats_sync_interval="always", relay_confirm_delay=3.5).relay_hold_seconds() == 3.5


def test_the_default_system_syncs_every_second_and_holds_events_two(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMS_NATS_SYNC_INTERVAL", raising=False)
    monkeypatch.delenv("OMS_RELAY_CONFIRM_DELAY", raising=False)
    settings = Settings()
    assert settings.nats_sync_interval == "1s"
    assert settings.relay_hold_seconds() == 2.0


def test_a_bad_sync_interval_is_refused() -> None:
    with pytest.raises(ValueError, match="not a duration"):
        Settings(nats_sync_interval="1 second").relay_hold_seconds()
