"""The topology: who publishes which subjects and who reads them."""

from __future__ import annotations

import pytest

from oms.kernel.events import EVENT_TYPES
from oms.kernel.topology import (
    CONSUMERS,
    PRODUCERS,
    RELAYED,
    consumer_of,
    producer_of,
    slot_name,
    subject_of,
    type_of,
)


def test_every_event_type_has_exactly_one_producer_and_one_consumer() -> None:
    for event_type in EVENT_TYPES:
        assert sum(p.publishes(event_type) for p in PRODUCERS.values()) == 1, event_type
        consumer = consumer_of(event_type)
        assert consumer is not None and consumer.reads is producer_of(event_type)


def test_order_events_go_to_the_account_and_funds_events_to_the_order_service() -> None:
    assert [(c.name, c.subjects) for c in CONSUMERS.values()] == [
        ("account", "oms.order.>"),
        ("order", "oms.funds.>"),
    ]
    assert RELAYED == ("order", "account")
    assert PRODUCERS["account"].relay == "relay-account"


def test_subjects_and_types_map_both_ways() -> None:
    assert subject_of("funds.reserved") == "oms.funds.reserved"
    assert type_of(subject_of("funds.reserved")) == "funds.reserved"
    assert slot_name("order") == PRODUCERS["order"].slot == "oms_order_outbox"


@pytest.mark.parametrize(
    ("subject", "event_type", "accepted"),
    [
        ("oms.order.created", "order.created", True),
        ("oms.order.created", "order.matched", False),  # a type published on another type's subject
        ("oms.order.created", "funds.reserved", False),  # the account's event on the order's subject
        ("oms.funds.reserved", "funds.reserved", False),  # not what the account consumer reads
    ],
)
def test_the_account_consumer_accepts_only_what_the_order_relay_may_publish(
    subject: str, event_type: str, accepted: bool
) -> None:
    assert CONSUMERS["account"].accepts(subject, event_type) is accepted


def test_dead_letters_of_a_consumer_are_kept_under_its_own_subjects() -> None:
    account = CONSUMERS["account"]
    assert account.dead_letter_subject("oms.order.created") == "oms_dlq.account.oms.order.created"
    assert account.dead_letters == "oms_dlq.account.>"
