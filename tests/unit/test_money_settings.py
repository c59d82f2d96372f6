"""The settings of money coming in and going out: the deposit policy (old true/false still read, with a
deprecation line) and the withdrawal approval threshold."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from pydantic import ValidationError

from oms.kernel.settings import DepositPolicy, Settings


def test_customer_deposits_are_requests_by_default() -> None:
    assert Settings().customer_deposits is DepositPolicy.REQUEST


@pytest.mark.parametrize("value", ["request", "instant", "off"])
def test_customer_deposits_policy_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("OMS_CUSTOMER_DEPOSITS", value)
    assert Settings().customer_deposits is DepositPolicy(value)


@pytest.mark.parametrize(("old", "new"), [("true", "instant"), ("false", "off"), ("TRUE", "instant")])
def test_customer_deposits_true_and_false_still_work_with_a_deprecation_line(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, old: str, new: str
) -> None:
    monkeypatch.setenv("OMS_CUSTOMER_DEPOSITS", old)
    with caplog.at_level(logging.WARNING, logger="oms.kernel.settings"):
        assert Settings().customer_deposits is DepositPolicy(new)
    assert f"OMS_CUSTOMER_DEPOSITS={old.lower()} is deprecated: it means {new}" in caplog.text


def test_customer_deposits_unknown_policy_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMS_CUSTOMER_DEPOSITS", "maybe")
    with pytest.raises(ValidationError):
        Settings()


def test_withdrawal_approval_threshold_is_an_exact_amount(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().withdrawal_approval_threshold == Decimal(50_000)
    monkeypatch.setenv("OMS_WITHDRAWAL_APPROVAL_THRESHOLD", "1234.56")
    assert Settings().withdrawal_approval_threshold == Decimal("1234.56")
    monkeypatch.setenv("OMS_WITHDRAWAL_APPROVAL_THRESHOLD", "-1")
    with pytest.raises(ValidationError):
        Settings()
