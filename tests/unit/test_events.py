"""The event envelope: exact decimals on the wire, validation by type, and committed JSON Schemas."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from oms.kernel.events import (
    EVENT_TYPES,
    Envelope,
    Event,
    FundsRejected,
    FundsReserved,
    MalformedEvent,
    OrderCanceled,
    OrderCreated,
    OrderMatched,
    parse,
    schema_text,
    wire_model,
)
from oms.kernel.money import Side

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas" / "events"


NOW = datetime(2026, 1, 2, 9, 30, 0, 123456, tzinfo=UTC)
IDS = {"order_id": uuid.uuid4(), "customer_id": uuid.uuid4(), "occurred_at": NOW}
ONE_OF_EACH: list[Event] = [
    OrderCreated(**IDS, asset_name="AAPL", side=Side.BUY, size=Decimal(3), price=Decimal("100.1")),
    OrderMatched(**IDS, asset_name="AAPL", side=Side.SELL, size=Decimal("0.5"), price=Decimal(7)),
    OrderCanceled(**IDS, reason="canceled by customer"),
    FundsReserved(**IDS, reservation_id=uuid.uuid4(), asset_name="TRY", amount=Decimal("300.3")),
    FundsRejected(**IDS, reason="insufficient usable TRY"),
]


def order_created(size: str = "10", price: str = "1.0000000000000001") -> Envelope[OrderCreated]:
    event = OrderCreated(**IDS, asset_name="AAPL", side=Side.BUY, size=Decimal(size), price=Decimal(price))
    return Envelope.of(event, traceparent="00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: e.event_type)
def test_event_round_trips_through_json_exactly(event: Event) -> None:
    envelope = Envelope.of(event)
    assert parse(envelope.to_json()) == envelope


@pytest.mark.parametrize("event", ONE_OF_EACH, ids=lambda e: e.event_type)
def test_event_as_published_is_what_its_json_schema_describes(event: Event) -> None:
    published = wire_model(type(event)).model_validate_json(Envelope.of(event).to_json())
    assert (
        published.model_dump(by_alias=False, exclude={"id", "type", "version", "traceparent", "data"}) == IDS
    )


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
    assert wire["version"] == 2
    assert wire["occurredAt"].endswith("Z")
    assert wire["data"]["size"] == "10.5"
    assert wire["data"]["price"] == "0.1"
    assert wire["data"]["orderSide"] == "BUY"


def test_event_without_traceparent_leaves_the_field_out() -> None:
    event = FundsReserved(**IDS, reservation_id=uuid.uuid4(), asset_name="TRY", amount=Decimal("1E+2"))
    envelope = Envelope.of(event)
    wire = json.loads(envelope.to_json())
    assert "traceparent" not in wire
    assert wire["data"] == {"reservationId": str(event.reservation_id), "assetName": "TRY", "amount": "100"}
    assert envelope.subject == "oms.funds.reserved"


def test_order_created_repeats_its_ids_in_data_and_they_must_agree() -> None:
    wire = json.loads(order_created().to_json())
    assert (wire["data"]["orderId"], wire["data"]["customerId"]) == (wire["orderId"], wire["customerId"])
    wire["data"]["customerId"] = str(uuid.uuid4())
    with pytest.raises(MalformedEvent, match="customerId"):
        parse(json.dumps(wire))


def test_parse_refuses_a_field_the_type_does_not_have() -> None:
    wire = json.loads(Envelope.of(ONE_OF_EACH[2]).to_json())
    wire["data"]["amount"] = "1000000000"
    with pytest.raises(MalformedEvent, match="amount"):
        parse(json.dumps(wire))


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


@pytest.mark.parametrize("event_type", sorted(EVENT_TYPES))
def test_committed_schema_matches_the_model(event_type: str) -> None:
    committed = SCHEMAS / f"{event_type}.json"
    assert committed.exists(), "run `python -m oms.kernel.events` and commit schemas/events/"
    assert committed.read_text() == schema_text(event_type), (
        f"{committed} is out of date with its model: run `python -m oms.kernel.events` and commit it"
    )


def test_every_committed_schema_has_a_model() -> None:
    assert sorted(p.stem for p in SCHEMAS.glob("*.json")) == sorted(EVENT_TYPES)


# --- Versions: what changed, and the older shapes still read ------------------------------------


def test_order_events_carry_their_types_version() -> None:
    versions = {e.event_type: json.loads(Envelope.of(e).to_json())["version"] for e in ONE_OF_EACH}
    assert versions == {
        "order.created": 2,
        "order.matched": 2,
        "order.canceled": 1,
        "funds.reserved": 1,
        "funds.rejected": 1,
    }


def test_order_matched_version_1_price_read_as_executed_price() -> None:
    wire = json.loads(Envelope.of(ONE_OF_EACH[1]).to_json())
    wire["version"], wire["data"]["price"] = 1, wire["data"].pop("executedPrice")
    parsed = parse(json.dumps(wire))
    assert isinstance(parsed.event, OrderMatched)
    assert (parsed.event.executed_price, parsed.version) == (Decimal(7), 1)


def test_order_created_version_1_a_limit_order_reserving_its_price() -> None:
    wire = json.loads(order_created(price="2.5").to_json())
    wire["version"] = 1
    for field in ("orderType", "timeInForce", "reservePrice"):
        del wire["data"][field]
    event = parse(json.dumps(wire)).event
    assert isinstance(event, OrderCreated)
    assert (event.order_type, event.time_in_force, event.buy_price) == ("LIMIT", "GTC", Decimal("2.5"))


def test_order_created_market_buy_reserves_its_reserve_price() -> None:
    event = OrderCreated(
        **IDS, asset_name="AAPL", side=Side.BUY, size=Decimal(3), price=None, order_type="MARKET",
        reserve_price=Decimal("105.1"),
    )  # fmt: skip
    assert parse(Envelope.of(event).to_json()).event == event
    assert event.buy_price == Decimal("105.1")


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"order_type": "MARKET"}, "a MARKET order has none"),
        ({"price": None}, "a LIMIT order has a price"),
        ({"price": None, "order_type": "MARKET"}, "reservePrice"),
    ],
)
def test_order_created_terms_that_do_not_fit_its_type_refused(
    changes: dict[str, object], problem: str
) -> None:
    terms: dict[str, object] = {
        "asset_name": "AAPL",
        "side": Side.BUY,
        "size": Decimal(3),
        "price": Decimal(1),
    }
    with pytest.raises(ValueError, match=problem):
        OrderCreated(**IDS, **{**terms, **changes})
