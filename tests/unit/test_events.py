"""The event envelope: exact decimals on the wire, validation by type, and committed JSON Schemas."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal
from pathlib import Path

import pytest

from oms.kernel.events import (
    EVENT_TYPES,
    FundsReserved,
    FundsReservedData,
    MalformedEvent,
    OrderCreated,
    OrderCreatedData,
    parse,
    schema_text,
    subject_of,
)
from oms.kernel.money import Side

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "events"


def order_created(size: str = "10", price: str = "1.0000000000000001") -> OrderCreated:
    order_id, customer_id = uuid.uuid4(), uuid.uuid4()
    return OrderCreated.new(
        order_id=order_id,
        customer_id=customer_id,
        data=OrderCreatedData(
            order_id=order_id,
            customer_id=customer_id,
            asset_name="AAPL",
            order_side=Side.BUY,
            size=Decimal(size),
            price=Decimal(price),
        ),
        traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )


def test_event_round_trips_through_json_exactly() -> None:
    event = order_created()
    assert parse(event.to_json()) == event


def test_event_on_the_wire_has_camel_case_envelope_and_decimal_strings() -> None:
    wire = json.loads(order_created(size="10.50", price="0.1").to_json())
    assert set(wire) == {
        "id",
        "type",
        "version",
        "occurredAt",
        "orderId",
        "customerId",
        "data",
        "traceparent",
    }
    assert wire["type"] == "order.created"
    assert wire["version"] == 1
    assert wire["occurredAt"].endswith("Z")
    assert wire["data"]["size"] == "10.5"
    assert wire["data"]["price"] == "0.1"
    assert wire["data"]["orderSide"] == "BUY"


def test_event_without_traceparent_leaves_the_field_out() -> None:
    event = FundsReserved.new(
        order_id=uuid.uuid4(),
        customer_id=uuid.uuid4(),
        data=FundsReservedData(reservation_id=uuid.uuid4(), asset_name="TRY", amount=Decimal("1E+2")),
    )
    wire = json.loads(event.to_json())
    assert "traceparent" not in wire
    assert wire["data"]["amount"] == "100"
    assert event.subject == "oms.funds.reserved"


def test_parse_refuses_a_float_amount() -> None:
    wire = order_created().to_json().replace(b'"size":"10"', b'"size":10.5')
    with pytest.raises(MalformedEvent, match="strings"):
        parse(wire)


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b'{"type": "order.exploded"}',
        b"{}",
        b'{"id": "1", "type": "order.canceled", "data": {}}',
    ],
)
def test_parse_refuses_what_is_not_a_valid_event(raw: bytes) -> None:
    with pytest.raises(MalformedEvent):
        parse(raw)


def test_parse_refuses_data_of_another_type() -> None:
    wire = json.loads(order_created().to_json())
    wire["type"] = "order.canceled"
    with pytest.raises(MalformedEvent, match="data"):
        parse(json.dumps(wire).encode())


@pytest.mark.parametrize("size", ["0", "-1", "NaN", "Infinity"])
def test_parse_refuses_sizes_that_are_not_positive_finite(size: str) -> None:
    wire = order_created().to_json().replace(b'"size":"10"', f'"size":"{size}"'.encode())
    with pytest.raises(MalformedEvent):
        parse(wire)


def test_subject_of_an_event_type_is_under_oms() -> None:
    assert subject_of("order.created") == "oms.order.created"


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_committed_schema_matches_the_model(event_type: str) -> None:
    committed = SCHEMAS / f"{event_type}.json"
    assert committed.exists(), "run `python -m oms.kernel.events` and commit schemas/events/"
    assert committed.read_text() == schema_text(event_type), (
        f"{committed} is out of date with its model: run `python -m oms.kernel.events` and commit it"
    )


def test_every_committed_schema_has_a_model() -> None:
    assert sorted(p.stem for p in SCHEMAS.glob("*.json")) == sorted(EVENT_TYPES)
