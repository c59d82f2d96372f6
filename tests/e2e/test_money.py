"""Money that cannot be abused, over real HTTP: the attacks of issue 11 tried again (self-deposits of 10^20,
phantom holds, -0), deposit requests and large withdrawals through their admins' decisions (four eyes,
decided once), and `oms audit` clean afterwards."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from tests.e2e.api import Api, User
from tests.e2e.conftest import RunningSystem, system_env

pytestmark = pytest.mark.e2e

D = Decimal
IBAN = "TR33 0006 1005 1978 6457 8413 26"
THRESHOLD = 1000  # this system's OMS_WITHDRAWAL_APPROVAL_THRESHOLD


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    running = RunningSystem(
        tmp_path_factory.mktemp("money") / "data",
        system_env(OMS_WITHDRAWAL_APPROVAL_THRESHOLD=str(THRESHOLD)),
    )
    running.start()
    yield Api(running)
    running.stop()


@pytest.fixture(scope="module")
def second_admin(api: Api) -> User:
    """Another admin, for the four-eyes rule."""
    return api.new_admin()


def requested(response: object) -> str:
    """The id of a request the API accepted as REQUESTED (202)."""
    assert getattr(response, "status_code", None) == 202, getattr(response, "text", response)
    body = response.json()  # type: ignore[attr-defined]
    assert body["status"] == "REQUESTED"
    request_id: str = body["id"]
    return request_id


# --- the attacks -------------------------------------------------------------------------------------------


def test_self_deposit_of_10_to_the_20_is_refused_and_the_largest_is_only_a_request(api: Api) -> None:
    admin, mallory = api.admin(), api.customer()
    for _ in range(3):
        refused = api.deposit(mallory, mallory, "TRY", "99999999999999999999.99999999")
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"] == "amount must be at most 1000000000000000"
    largest = requested(api.deposit(mallory, mallory, "TRY", "1000000000000000"))

    assert api.balances(admin, mallory) == {}
    assert api.ledger_of(admin, mallory) == []
    cash_out = api.withdraw(mallory, mallory, "500", IBAN)
    assert cash_out.status_code == 409, cash_out.text
    assert cash_out.json()["error"] == "insufficient usable TRY: 0 usable, 500 requested"
    [mine] = api.requests_of(mallory, "deposit")
    assert (mine["id"], mine["status"], mine["amount"], mine["decidedBy"]) == (
        largest,
        "REQUESTED",
        D(10) ** 15,
        None,
    )
    assert mine["requestedBy"] == mallory.id


def test_deposit_refuses_a_phantom_hold_and_minus_zero_for_everyone(api: Api) -> None:
    admin, customer = api.admin(), api.customer()
    for by in (customer, admin):
        phantom = api.deposit(by, customer, "TRY", "10", "5")
        assert phantom.status_code == 422, phantom.text
        assert phantom.json()["error"].startswith("usableSize must equal totalSize")
        for zero in ("-0", -0.0, "0", 0):
            assert api.deposit(by, customer, "TRY", zero, zero).status_code == 422, zero
        assert api.deposit(by, customer, "TRY", "0.000000001").status_code == 422
    assert api.balances(admin, customer) == {}
    assert api.ledger_of(admin, customer) == []
    assert api.requests_of(admin, "deposit", customer) == []


# --- deposit requests --------------------------------------------------------------------------------------


def test_deposit_request_is_credited_once_an_admin_approves_it(api: Api) -> None:
    admin, customer = api.admin(), api.customer()
    request_id = requested(api.deposit(customer, customer, "TRY", "250.75"))
    waiting = api.requests_of(admin, "deposit", status="REQUESTED")
    assert request_id in {d["id"] for d in waiting}
    assert api.decide(customer, "deposit", request_id, "approve").status_code == 403

    approved = api.decide(admin, "deposit", request_id, "approve", key="approve-1")
    assert approved.status_code == 200, approved.text
    assert (approved.json()["status"], approved.json()["decidedBy"]) == ("APPROVED", admin.id)
    assert api.decide(admin, "deposit", request_id, "approve", key="approve-1").json() == approved.json()
    for verdict in ("approve", "reject"):
        twice = api.decide(admin, "deposit", request_id, verdict)
        assert twice.status_code == 409, twice.text
        assert twice.json()["error"] == f"deposit {request_id} is APPROVED, no longer REQUESTED"

    assert api.balances(customer, customer) == {"TRY": (D("250.75"), D("250.75"))}
    [entry] = api.ledger_of(customer, customer)
    assert (entry["kind"], entry["deltaTotal"], entry["reference"]) == ("DEPOSIT", D("250.75"), request_id)
    [mine] = api.requests_of(customer, "deposit")
    assert (mine["status"], mine["decidedBy"]) == ("APPROVED", admin.id) and mine["decidedAt"]


def test_rejected_deposit_request_credits_nothing(api: Api) -> None:
    admin, customer = api.admin(), api.customer()
    request_id = requested(api.deposit(customer, customer, "TRY", "40"))
    assert api.decide(admin, "deposit", request_id, "reject").json()["status"] == "REJECTED"
    assert api.decide(admin, "deposit", request_id, "approve").status_code == 409
    assert api.balances(admin, customer) == {}
    assert [d["status"] for d in api.requests_of(customer, "deposit")] == ["REJECTED"]
    assert api.decide(admin, "deposit", str(uuid.uuid4()), "approve").status_code == 404


def test_two_admins_approving_one_deposit_at_once_credit_it_once(api: Api, second_admin: User) -> None:
    admin, customer = api.admin(), api.customer()
    request_id = requested(api.deposit(customer, customer, "TRY", "100"))
    with ThreadPoolExecutor(2) as pool:
        answers = list(
            pool.map(lambda a: api.decide(a, "deposit", request_id, "approve"), [admin, second_admin] * 3)
        )
    assert sorted(a.status_code for a in answers) == [200, 409, 409, 409, 409, 409]
    assert api.balances(admin, customer) == {"TRY": (D(100), D(100))}


def test_a_customer_sees_only_its_own_requests(api: Api) -> None:
    admin, alice, bob = api.admin(), api.customer(), api.customer()
    requested(api.deposit(alice, alice, "TRY", "1"))
    for kind in ("deposit", "withdrawal"):
        assert (
            api.call(
                "GET", "account", f"/api/v1/{kind}s", by=bob, params={"customerId": alice.id}
            ).status_code
            == 403
        )
        assert api.requests_of(bob, kind) == []
    assert {d["customerId"] for d in api.requests_of(admin, "deposit")} >= {alice.id}


# --- large withdrawals -------------------------------------------------------------------------------------


def funded(api: Api, amount: str = "5000") -> User:
    customer = api.customer()
    assert api.deposit(api.admin(), customer, "TRY", amount).status_code == 200
    return customer


def test_withdrawal_up_to_the_threshold_is_paid_at_once(api: Api) -> None:
    customer = funded(api)
    paid = api.withdraw(customer, customer, str(THRESHOLD), IBAN)
    assert (paid.status_code, paid.json()["status"]) == (200, "PAID")
    assert api.balances(customer, customer) == {"TRY": (D(4000), D(4000))}


def test_large_withdrawal_is_held_until_an_admin_approves_it(api: Api) -> None:
    admin, customer = api.admin(), funded(api)
    request_id = requested(api.withdraw(customer, customer, "1000.01", IBAN))
    assert api.balances(customer, customer) == {"TRY": (D(5000), D("3999.99"))}
    assert api.withdraw(customer, customer, "4000", IBAN).status_code == 409  # the held part is not usable
    [waiting] = api.requests_of(admin, "withdrawal", customer, status="REQUESTED")
    assert (waiting["id"], waiting["amount"], waiting["iban"]) == (
        request_id,
        D("1000.01"),
        "TR330006100519786457841326",
    )

    paid = api.decide(admin, "withdrawal", request_id, "approve")
    assert (paid.status_code, paid.json()["status"]) == (200, "PAID")
    assert api.balances(customer, customer) == {"TRY": (D("3999.99"), D("3999.99"))}
    kinds = [(e["kind"], e["reference"]) for e in api.ledger_of(customer, customer)]
    assert kinds[:2] == [("PAYOUT", request_id), ("RESERVE", request_id)]


def test_large_withdrawal_asked_by_an_admin_needs_another_admin(api: Api, second_admin: User) -> None:
    admin, customer = api.admin(), funded(api)
    request_id = requested(api.withdraw(admin, customer, "2500", IBAN))
    same = api.decide(admin, "withdrawal", request_id, "approve")
    assert same.status_code == 403, same.text
    assert "four eyes" in same.json()["error"]
    assert api.balances(admin, customer) == {"TRY": (D(5000), D(2500))}

    approved = api.decide(second_admin, "withdrawal", request_id, "approve")
    assert (approved.status_code, approved.json()["decidedBy"]) == (200, second_admin.id)
    assert api.decide(second_admin, "withdrawal", request_id, "approve").status_code == 409
    assert api.balances(admin, customer) == {"TRY": (D(2500), D(2500))}
    [done] = api.requests_of(customer, "withdrawal")
    assert (done["status"], done["requestedBy"], done["decidedBy"]) == ("PAID", admin.id, second_admin.id)


def test_rejected_large_withdrawal_releases_its_hold(api: Api) -> None:
    admin, customer = api.admin(), funded(api)
    request_id = requested(api.withdraw(customer, customer, "4999", IBAN, key="big-one"))
    assert requested(api.withdraw(customer, customer, "4999", IBAN, key="big-one")) == request_id  # a retry
    rejected = api.decide(admin, "withdrawal", request_id, "reject")
    assert rejected.json()["status"] == "REJECTED"
    assert api.decide(admin, "withdrawal", request_id, "approve").status_code == 409
    assert api.balances(customer, customer) == {"TRY": (D(5000), D(5000))}
    kinds = [e["kind"] for e in api.ledger_of(customer, customer)]
    assert kinds == ["RELEASE", "RESERVE", "DEPOSIT"]


def test_audit_finds_every_invariant_holding_after_all_of_it(api: Api) -> None:
    pending = funded(api)
    requested(api.withdraw(pending, pending, "3000", IBAN))  # still REQUESTED: its hold is accounted for
    requested(api.deposit(pending, pending, "TRY", "10"))
    audit = subprocess.run(
        [sys.executable, "-m", "oms", "audit", "--data-dir", str(api.system.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
        env=api.system.env,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "every invariant holds" in audit.stdout


# --- the demo policy ---------------------------------------------------------------------------------------


def test_instant_deposits_under_the_deprecated_true_are_credited_at_once(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    running = RunningSystem(
        tmp_path_factory.mktemp("demo") / "data", system_env(OMS_CUSTOMER_DEPOSITS="true")
    )
    running.start()
    try:
        api = Api(running)
        customer = api.customer()
        credited = api.deposit(customer, customer, "TRY", "12.5")
        assert credited.status_code == 200, credited.text
        assert api.balances(customer, customer) == {"TRY": (D("12.5"), D("12.5"))}
        [deposit] = api.requests_of(customer, "deposit")
        assert (deposit["status"], deposit["decidedBy"]) == ("APPROVED", customer.id)
        assert any("OMS_CUSTOMER_DEPOSITS=true is deprecated" in line for line in running.output)
    finally:
        running.stop()
