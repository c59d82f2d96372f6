"""The event envelope every service publishes, one pydantic model per event type, and their JSON Schemas.

On the wire an event is `{"id", "type", "version", "occurredAt", "orderId", "customerId", "data": {...},
"traceparent"?}`, published on the subject `oms.<type>`. Sizes, prices and amounts travel as decimal strings
("12.5"), never as JSON numbers: a float would round them.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self

from pydantic import (
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic.alias_generators import to_camel

from oms.kernel.money import Side, plain
from oms.kernel.topology import subject_of

SCHEMA_DIR: Final = Path("schemas") / "events"
_DECIMAL_PATTERN: Final = r"^[0-9]+(\.[0-9]+)?$"


class MalformedEvent(ValueError):
    """Bytes that are not a valid event: not JSON, an unknown type, or data that does not fit the type."""


def _no_floats(value: object) -> object:
    if isinstance(value, float):
        raise ValueError("decimal values travel as strings, never as floating-point numbers")
    return value


PositiveAmount = Annotated[
    Decimal,
    BeforeValidator(_no_floats),
    Field(gt=0, allow_inf_nan=False),
    PlainSerializer(plain, return_type=str, when_used="json"),
    WithJsonSchema({"type": "string", "pattern": _DECIMAL_PATTERN}, mode="serialization"),
]


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


class OrderCreatedData(_Model):
    order_id: uuid.UUID
    customer_id: uuid.UUID
    asset_name: str = Field(min_length=1, max_length=12)
    order_side: Side
    size: PositiveAmount
    price: PositiveAmount


class OrderCanceledData(_Model):
    reason: str


class OrderMatchedData(_Model):
    """The execution; it repeats the order's asset and side so that settlement needs nothing else."""

    asset_name: str = Field(min_length=1, max_length=12)
    order_side: Side
    size: PositiveAmount
    price: PositiveAmount


class FundsReservedData(_Model):
    reservation_id: uuid.UUID
    asset_name: str = Field(min_length=1, max_length=12)
    amount: PositiveAmount


class FundsRejectedData(_Model):
    reason: str


class Envelope(_Model):
    """What every event has in common; the subclasses fix `type` and the shape of `data`."""

    id: uuid.UUID
    type: str
    version: int = Field(default=1, ge=1)
    occurred_at: AwareDatetime
    order_id: uuid.UUID
    customer_id: uuid.UUID
    data: _Model
    traceparent: str | None = None

    @classmethod
    def new(
        cls,
        *,
        order_id: uuid.UUID,
        customer_id: uuid.UUID,
        data: Any,
        traceparent: str | None = None,
    ) -> Self:
        """A fresh event with a new id, occurring now."""
        return cls(
            id=uuid.uuid4(),
            type=cls.model_fields["type"].default,
            occurred_at=datetime.now(UTC),
            order_id=order_id,
            customer_id=customer_id,
            data=data,
            traceparent=traceparent,
        )

    @property
    def subject(self) -> str:
        return subject_of(self.type)

    def to_json(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class OrderCreated(Envelope):
    type: Literal["order.created"] = "order.created"
    data: OrderCreatedData


class OrderCanceled(Envelope):
    type: Literal["order.canceled"] = "order.canceled"
    data: OrderCanceledData


class OrderMatched(Envelope):
    type: Literal["order.matched"] = "order.matched"
    data: OrderMatchedData


class FundsReserved(Envelope):
    type: Literal["funds.reserved"] = "funds.reserved"
    data: FundsReservedData


class FundsRejected(Envelope):
    type: Literal["funds.rejected"] = "funds.rejected"
    data: FundsRejectedData


Event = Annotated[
    OrderCreated | OrderCanceled | OrderMatched | FundsReserved | FundsRejected,
    Field(discriminator="type"),
]

EVENT_TYPES: Final[dict[str, type[Envelope]]] = {
    model.model_fields["type"].default: model
    for model in (OrderCreated, OrderCanceled, OrderMatched, FundsReserved, FundsRejected)
}

_EVENT: Final[TypeAdapter[Event]] = TypeAdapter(Event)


def parse(raw: bytes | str) -> Event:
    """The event in `raw`, its data validated against its type's model; MalformedEvent if it is not one."""
    try:
        return _EVENT.validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'event'}: {e['msg']}" for e in exc.errors())
        raise MalformedEvent(problems[:1000]) from None


def schema_of(event_type: str) -> dict[str, Any]:
    """The JSON Schema of `event_type` as it is published (decimals as strings)."""
    model = EVENT_TYPES[event_type]
    schema = model.model_json_schema(mode="serialization")
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
