"""The events services publish, defined once: each is a frozen model the domains build and read, and its wire
form (the envelope) is derived from it.

On the wire an event is `{"id", "type", "version", "occurredAt", "orderId", "customerId", "data": {...},
"traceparent"?}`, published on the subject `oms.<type>`: the event's order, customer and time go into the
envelope, its other fields into `data`. Sizes, prices and amounts travel as decimal strings ("12.5"), never as
JSON numbers: a float would round them. The event id belongs to the envelope, not to the fact: it is given
when the event is queued for publishing, and consumers record it in their inbox.
"""

from __future__ import annotations

import json
import sys
import uuid
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, ClassVar, Final, Generic, Literal, NotRequired, TypeVar

from pydantic import (
    AliasChoices,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
    create_model,
    model_validator,
    with_config,
)
from pydantic.alias_generators import to_camel
from typing_extensions import TypedDict

from oms.kernel.money import OrderType, Side, TimeInForce, plain, refuse_floats
from oms.kernel.topology import subject_of

SCHEMA_DIR: Final = Path("schemas") / "events"
VERSION: Final = 1  # of an event type's first shape; each type says its own current `version`
_DECIMAL_PATTERN: Final = r"^[0-9]+(\.[0-9]+)?$"


class MalformedEvent(ValueError):
    """Bytes that are not a valid event: not JSON, an unknown type, or data that does not fit the type."""


PositiveAmount = Annotated[
    Decimal,
    BeforeValidator(refuse_floats("decimal values travel as strings")),
    Field(gt=0, allow_inf_nan=False),
    PlainSerializer(plain, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": _DECIMAL_PATTERN}, mode="serialization"),
]
AssetName = Annotated[str, Field(min_length=1, max_length=12)]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        frozen=True,
        extra="forbid",
        json_schema_serialization_defaults_required=True,
    )


class Event(_Model):
    """A fact about one order. Subclasses fix `event_type` and add the fields that travel in `data`; `version`
    grows when the shape of `data` changes (consumers still read the older shapes)."""

    event_type: ClassVar[str]
    version: ClassVar[int] = VERSION
    # The fields that travel in the envelope rather than in `data`.
    ENVELOPE_FIELDS: ClassVar[frozenset[str]] = frozenset({"order_id", "customer_id", "occurred_at"})
    # Fields of the envelope that `data` repeats too (part of the published contract; see OrderCreated).
    REPEATED_IN_DATA: ClassVar[frozenset[str]] = frozenset()

    order_id: uuid.UUID
    customer_id: uuid.UUID
    occurred_at: AwareDatetime


class OrderCreated(Event):
    """A new PENDING order: the account reserves its funds or rejects it.

    Version 2 added `orderType`, `timeInForce` and `reservePrice`, and `price` (the limit) became null for a
    MARKET order. A BUY reserves size × `reservePrice` TRY: its limit, or for a MARKET BUY the ask plus the
    collar (version 1 events have no `reservePrice`: the limit is reserved)."""

    event_type: ClassVar[str] = "order.created"
    version: ClassVar[int] = 2
    # order.created has carried its order and customer ids in `data` as well since its first version.
    REPEATED_IN_DATA: ClassVar[frozenset[str]] = frozenset({"order_id", "customer_id"})

    asset_name: AssetName
    side: Side = Field(validation_alias="orderSide", serialization_alias="orderSide")
    size: PositiveAmount
    price: PositiveAmount | None
    order_type: OrderType = OrderType.LIMIT
    time_in_force: TimeInForce = TimeInForce.GTC
    reserve_price: PositiveAmount | None = None

    @model_validator(mode="after")
    def _priced(self) -> OrderCreated:
        if (self.price is None) != (self.order_type is OrderType.MARKET):
            raise ValueError("a LIMIT order has a price and a MARKET order has none")
        if self.side is Side.BUY and self.buy_price is None:
            raise ValueError("a MARKET BUY says what it reserves (reservePrice)")
        return self

    @property
    def buy_price(self) -> Decimal | None:
        """What a BUY reserves per unit: `reservePrice`, else its limit."""
        return self.reserve_price or self.price


class OrderMatched(Event):
    """Executed at `executedPrice`: the account settles the reservation (and releases what the execution did
    not use). It repeats the order's asset and side so that settlement needs nothing else.

    Version 2 renamed `price` to `executedPrice` (version 1: orders executed at their limit, its `price`)."""

    event_type: ClassVar[str] = "order.matched"
    version: ClassVar[int] = 2

    asset_name: AssetName
    side: Side = Field(validation_alias="orderSide", serialization_alias="orderSide")
    size: PositiveAmount
    executed_price: PositiveAmount = Field(
        validation_alias=AliasChoices("executedPrice", "price"), serialization_alias="executedPrice"
    )


class OrderCanceled(Event):
    """The account releases the order's reservation, or remembers the cancel if it has not reserved yet.
    Also sent again when funds were reserved for an order already canceled (the account releases once)."""

    event_type: ClassVar[str] = "order.canceled"

    reason: str


class FundsReserved(Event):
    """The account holds the order's funds (TRY for a BUY, the asset for a SELL)."""

    event_type: ClassVar[str] = "funds.reserved"

    reservation_id: uuid.UUID
    asset_name: AssetName
    amount: PositiveAmount


class FundsRejected(Event):
    """The account could not reserve the order's funds (or the order was canceled before it tried)."""

    event_type: ClassVar[str] = "funds.rejected"

    reason: str


AnyEvent = OrderCreated | OrderMatched | OrderCanceled | FundsReserved | FundsRejected
E = TypeVar("E", bound=Event, covariant=True)
Ev = TypeVar("Ev", bound=Event)

EVENT_TYPES: Final[dict[str, type[Event]]] = {
    model.event_type: model
    for model in (OrderCreated, OrderMatched, OrderCanceled, FundsReserved, FundsRejected)
}


@dataclass(frozen=True, slots=True)
class Envelope(Generic[E]):
    """An event as it is published: with the id consumers deduplicate by, and its trace context."""

    id: uuid.UUID
    event: E
    version: int = VERSION
    traceparent: str | None = None

    @staticmethod
    def of(event: Ev, traceparent: str | None = None) -> Envelope[Ev]:
        """`event`, about to be published for the first time: a new id, its type's current version."""
        return Envelope(uuid.uuid4(), event, event.version, traceparent)

    @property
    def type(self) -> str:
        return self.event.event_type

    @property
    def subject(self) -> str:
        return subject_of(self.type)

    @property
    def order_id(self) -> uuid.UUID:
        return self.event.order_id

    @property
    def customer_id(self) -> uuid.UUID:
        return self.event.customer_id

    def to_json(self) -> bytes:
        event = self.event
        wire: _WireOut = {
            "id": self.id,
            "type": event.event_type,
            "version": self.version,
            "occurredAt": event.occurred_at,
            "orderId": event.order_id,
            "customerId": event.customer_id,
            "data": event.model_dump(mode="json", include=set(_DATA_FIELDS[event.event_type])),
        }
        if self.traceparent is not None:
            wire["traceparent"] = self.traceparent
        return _WIRE_OUT.dump_json(wire)


# --- The wire form ------------------------------------------------------------------------------------------


@with_config(ConfigDict(extra="forbid"))
class _WireIn(TypedDict):
    id: uuid.UUID
    type: str
    version: Annotated[int, Field(ge=1)]
    occurredAt: AwareDatetime
    orderId: uuid.UUID
    customerId: uuid.UUID
    data: dict[str, Any]
    traceparent: NotRequired[str | None]


class _WireOut(TypedDict):
    id: uuid.UUID
    type: str
    version: int
    occurredAt: datetime
    orderId: uuid.UUID
    customerId: uuid.UUID
    data: dict[str, Any]
    traceparent: NotRequired[str]


_WIRE_IN: Final = TypeAdapter(_WireIn)
_WIRE_OUT: Final = TypeAdapter(_WireOut)


def _data_fields(event_type: type[Event]) -> frozenset[str]:
    """The fields of `event_type` that travel in `data`."""
    return frozenset(
        name
        for name in event_type.model_fields
        if name not in event_type.ENVELOPE_FIELDS or name in event_type.REPEATED_IN_DATA
    )


def _wire_names(model: type[Event], field: str) -> set[str]:
    """The names `field` is published under and read from (an older version's name too)."""
    info = model.model_fields[field]
    names = {info.serialization_alias or info.alias or field}
    if isinstance(info.validation_alias, AliasChoices):
        names |= {choice for choice in info.validation_alias.choices if isinstance(choice, str)}
    return names


_DATA_FIELDS: Final = {name: _data_fields(model) for name, model in EVENT_TYPES.items()}
_DATA_KEYS: Final = {
    name: frozenset().union(*(_wire_names(model, field) for field in _DATA_FIELDS[name]))
    for name, model in EVENT_TYPES.items()
}


def parse(raw: bytes | str) -> Envelope[AnyEvent]:
    """The event in `raw`, validated against its type; MalformedEvent if it is not one."""
    try:
        wire = _WIRE_IN.validate_json(raw)
    except ValidationError as exc:
        raise MalformedEvent(_problems(exc)) from None
    event_type = EVENT_TYPES.get(wire["type"])
    if event_type is None:
        raise MalformedEvent(f"type: unknown event type {wire['type']!r}")
    data = wire["data"]
    unknown = set(data) - _DATA_KEYS[event_type.event_type]
    if unknown:
        raise MalformedEvent(f"data: not fields of {event_type.event_type}: {', '.join(sorted(unknown))}")
    envelope = {"orderId": wire["orderId"], "customerId": wire["customerId"]}
    for key, value in envelope.items():
        if key in data and data[key] != str(value):
            raise MalformedEvent(f"data.{key}: not the envelope's {key}")
    try:
        event = event_type.model_validate({**data, **envelope, "occurredAt": wire["occurredAt"]})
    except ValidationError as exc:
        raise MalformedEvent(_problems(exc, "data.")) from None
    return Envelope(wire["id"], event, wire["version"], wire.get("traceparent"))  # type: ignore[arg-type]


def _problems(exc: ValidationError, prefix: str = "") -> str:
    problems = "; ".join(
        f"{prefix}{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in exc.errors()
    )
    return problems[:1000]


# --- The published contract, for the JSON Schemas --------------------------------------------------------


class _Wire(_Model):
    """The envelope as published; each event type's model fixes `type` and the shape of `data`."""

    id: uuid.UUID
    type: str
    version: int = Field(default=VERSION, ge=1)
    occurred_at: AwareDatetime
    order_id: uuid.UUID
    customer_id: uuid.UUID
    data: _Model
    traceparent: str | None = None


def wire_model(event_type: type[Event]) -> type[BaseModel]:
    """The published form of `event_type` as a model: a `<Name>Data` model of its data fields inside the
    envelope (what its JSON Schema describes)."""
    fields: dict[str, Any] = {
        name: (info.annotation, info)
        for name, info in event_type.model_fields.items()
        if name in _data_fields(event_type)
    }
    data: Any = create_model(
        f"{event_type.__name__}Data",
        __base__=_Model,
        __doc__=event_type.__doc__,
        **fields,
    )
    literal: Any = Literal[event_type.event_type]
    wire: type[BaseModel] = create_model(
        event_type.__name__,
        __base__=_Wire,
        __doc__=event_type.__doc__,
        type=(literal, event_type.event_type),
        version=(int, Field(default=event_type.version, ge=1)),
        data=(data, ...),
    )
    return wire


# --- JSON Schemas -------------------------------------------------------------------------------------------


def schema_of(event_type: str) -> dict[str, Any]:
    """The JSON Schema of `event_type` as it is published (decimals as strings)."""
    schema = wire_model(EVENT_TYPES[event_type]).model_json_schema(mode="serialization")
    # `to_json` leaves out a missing traceparent rather than sending null.
    schema["required"].remove("traceparent")
    schema["properties"]["traceparent"] = {"title": "Traceparent", "type": "string"}
    schema["$id"] = f"{event_type}.json"
    schema["description"] = f"The `{event_type}` event, published on the subject `{subject_of(event_type)}`."
    return schema


def schema_text(event_type: str) -> str:
    return json.dumps(schema_of(event_type), indent=2, sort_keys=True) + "\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write `<type>.json` for every event type into `directory`; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for event_type in EVENT_TYPES:
        path = directory / f"{event_type}.json"
        path.write_text(schema_text(event_type))
        written.append(path)
    return written


if __name__ == "__main__":
    for path in write_schemas(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(path)
