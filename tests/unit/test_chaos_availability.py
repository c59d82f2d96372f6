"""What chaos on a cluster measures, without a system: who a process is, the figures the clients saw."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from oms.bench.processes import child_name
from oms.chaos.availability import availability, longest_gap
from oms.chaos.faults import FaultLog, component_of
from oms.chaos.run import ChaosConfig
from oms.chaos.workload import Ledger, Op


def test_a_replica_belongs_to_its_component() -> None:
    assert component_of("order-2") == "order"
    assert component_of("relay-account-1") == "relay-account"
    assert component_of("nats-3") == "nats"
    assert component_of("relay-order") == "relay-order"  # a single node's role
    assert component_of("postgres-order") == "postgres-order"


@pytest.fixture
def looks_like() -> Iterator[Any]:
    started: list[subprocess.Popen[bytes]] = []

    def spawn(*argv: str) -> psutil.Process:
        # A process whose command line is that of a child of `oms up --cluster` (it only sleeps).
        code = "import time; time.sleep(30)"
        process = subprocess.Popen([sys.executable, "-c", code, "-m", "oms", *argv])
        started.append(process)
        found = psutil.Process(process.pid)
        while "oms" not in found.cmdline():  # /proc shows the new command line a moment after the exec
            time.sleep(0.01)
        return found

    yield spawn
    for process in started:
        process.kill()
        process.wait()


def test_a_cluster_child_is_known_by_its_own_port(looks_like: Any) -> None:
    replicas = {"order-1": 20001, "order-2": 20002, "relay-order-1": 20011, "relay-order-2": 20012}
    order = looks_like("serve", "order", "--reuse-port", "--replica-port", "20002")
    relay = looks_like("serve", "relay", "--service", "order", "--port", "20011")
    assert child_name(order, replicas, {}) == "order-2"
    assert child_name(relay, replicas, {}) == "relay-order-1"
    assert child_name(order, {}, {}) == "order"  # a single node: the role


def test_the_longest_gap_counts_the_edges_of_the_load() -> None:
    assert longest_gap([12.0, 13.0, 19.5], 10.0, 20.0) == (6.5, 13.0)
    assert longest_gap([11.0], 10.0, 20.0) == (9.0, 11.0)
    assert longest_gap([], 10.0, 20.0) == (10.0, 10.0)
    assert longest_gap([5.0, 25.0], 10.0, 20.0) == (10.0, 10.0)  # answers outside the load do not count


def _op(sent: float, answered: float | None, attempts: int, outcome: str = "accepted") -> Op:
    return Op("order", "c", {}, outcome=outcome, attempts=attempts, sent_at=sent, answered_at=answered)


def test_availability_is_what_the_clients_saw_during_the_load() -> None:
    book = Ledger()
    book.orders = [
        _op(100.0, 100.1, 1),
        _op(101.0, 104.0, 3),  # retried: answered, but not at the first attempt
        _op(102.0, 102.2, 1, "refused"),  # a 4xx is an answer
        _op(103.0, None, 9, "unresolved"),
        _op(90.0, 90.1, 1),  # funding, before the faults: not counted
    ]
    faults = FaultLog(takeovers=[1.2, 0.8, 2.0])
    faults.leader_kills = [
        {"leader": "nats-1", "new_leader": "nats-2", "election_s": 1.5, "stall_s": 2.5},
        {"leader": "nats-2", "new_leader": None, "election_s": None, "stall_s": None},
    ]
    seen = availability(book, faults, 100.0, 110.0)
    assert (seen["requests"], seen["answered_first_time"], seen["answered_first_time_pct"]) == (4, 2, 50.0)
    # creates answered at 100.1 and 104.0 (the refusal is not a create): the longest gap is to the end
    assert (seen["longest_without_a_create_s"], seen["longest_without_a_create_from_s"]) == (6.0, 4.0)
    assert seen["relay_takeover"] == {"count": 3, "median_s": 1.2, "max_s": 2.0}
    assert seen["leader_election"] == {"count": 1, "median_s": 1.5, "max_s": 1.5}
    assert seen["publish_stall"] == {"count": 1, "median_s": 2.5, "max_s": 2.5}


def test_on_a_cluster_every_nats_server_and_database_server_is_crashed() -> None:
    full, ci = ChaosConfig.sized(ci=False, cluster=True), ChaosConfig.sized(ci=True, cluster=True)
    assert full.cluster and full.nats_restarts >= 6 and full.pg_restarts >= 4  # 3 of them the leader
    assert ci.cluster and ci.nats_restarts >= 3 and ci.orders >= 1000
    assert not ChaosConfig.sized(ci=False, cluster=False).cluster
