"""What the back office shows, read from the services' JSON answers (exact decimals, UTC times)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from oms.kernel.money import CASH


def decimal(value: Any) -> Decimal:
    """An exact decimal from a JSON number (parsed as Decimal or int) or string."""
    return value if isinstance(value, Decimal) else Decimal(str(value))


def moment(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


@dataclass(frozen=True)
class Balance:
    asset: str
    total: Decimal
    usable: Decimal

    @property
    def reserved(self) -> Decimal:
        """Held for PENDING orders and REQUESTED withdrawals: total − usable."""
        return self.total - self.usable

    @classmethod
    def of(cls, data: dict[str, Any]) -> Balance:
        return cls(data["assetName"], decimal(data["totalSize"]), decimal(data["usableSize"]))


def sorted_balances(balances: list[Balance]) -> list[Balance]:
    """Cash first, then the other assets by name."""
    return sorted(balances, key=lambda b: (b.asset != CASH, b.asset))


@dataclass(frozen=True)
class Order:
    id: str
    customer_id: str
    asset: str
    side: str
    size: Decimal
    price: Decimal | None  # the limit; None for a MARKET order
    status: str
    reason: str | None
    funds_reserved: bool
    created_at: datetime
    updated_at: datetime
    order_type: str = "LIMIT"
    time_in_force: str = "GTC"
    executed_price: Decimal | None = None

    @property
    def shown_price(self) -> Decimal | None:
        """What the order executed at, or before that its limit (None: a MARKET order not executed yet)."""
        return self.executed_price or self.price

    @property
    def cost(self) -> Decimal | None:
        price = self.shown_price
        return self.size * price if price is not None else None

    @property
    def pending(self) -> bool:
        return self.status == "PENDING"

    @classmethod
    def of(cls, data: dict[str, Any]) -> Order:
        return cls(
            id=data["id"],
            customer_id=data["customerId"],
            asset=data["assetName"],
            side=data["orderSide"],
            size=decimal(data["size"]),
            price=decimal(data["price"]) if data.get("price") is not None else None,
            status=data["status"],
            reason=data.get("reason"),
            funds_reserved=bool(data.get("fundsReserved")),
            created_at=moment(data["createDate"]),
            updated_at=moment(data["updateDate"]),
            order_type=data.get("orderType", "LIMIT"),
            time_in_force=data.get("timeInForce", "GTC"),
            executed_price=decimal(data["executedPrice"]) if data.get("executedPrice") is not None else None,
        )


@dataclass(frozen=True)
class Cursor:
    """Where a page of a list starts: older than `after`, or newer than `before`; neither: the newest."""

    after: str | None = None
    before: str | None = None

    def params(self) -> dict[str, str]:
        """The list API's query parameters."""
        if self.after:
            return {"cursor": self.after}
        return {"before": self.before} if self.before else {}


@dataclass(frozen=True)
class Count:
    """How many rows a list has in all: exact, or at least `count` (counting stops at a bound)."""

    count: int
    at_least: bool


@dataclass(frozen=True)
class OrderPage:
    orders: list[Order]
    next_cursor: str | None
    prev_cursor: str | None = None


@dataclass(frozen=True)
class OrderFilter:
    """The order list's filters, as the order API takes them."""

    customer_id: str | None = None
    start: date | None = None
    end: date | None = None
    status: str | None = None
    asset: str | None = None
    side: str | None = None

    def params(self) -> dict[str, str]:
        values = {
            "customerId": self.customer_id,
            "startDate": self.start.isoformat() if self.start else None,
            "endDate": self.end.isoformat() if self.end else None,
            "status": self.status,
            "assetName": self.asset,
            "orderSide": self.side,
        }
        return {k: v for k, v in values.items() if v}


@dataclass(frozen=True)
class LedgerEntry:
    seq: int
    asset: str
    kind: str
    delta_total: Decimal
    delta_usable: Decimal
    order_id: str | None
    reference: str | None
    created_at: datetime
    total_after: Decimal  # the balance's running figures just after this movement
    usable_after: Decimal

    @classmethod
    def of(cls, data: dict[str, Any]) -> LedgerEntry:
        return cls(
            seq=int(data["seq"]),
            asset=data["assetName"],
            kind=data["kind"],
            delta_total=decimal(data["deltaTotal"]),
            delta_usable=decimal(data["deltaUsable"]),
            order_id=data.get("orderId"),
            reference=data.get("reference"),
            created_at=moment(data["createdAt"]),
            total_after=decimal(data["totalAfter"]),
            usable_after=decimal(data["usableAfter"]),
        )


@dataclass(frozen=True)
class LedgerPage:
    entries: list[LedgerEntry]
    next_cursor: str | None
    prev_cursor: str | None = None


@dataclass(frozen=True)
class TrailEntry:
    """One admin action of the admin trail."""

    seq: int
    at: datetime
    actor_id: str
    actor: str
    action: str
    target_kind: str
    target_id: str
    target: str
    detail: str

    @classmethod
    def of(cls, data: dict[str, Any]) -> TrailEntry:
        return cls(
            seq=int(data["seq"]),
            at=moment(data["at"]),
            actor_id=data["actorId"],
            actor=data["actorName"],
            action=data["action"],
            target_kind=data["targetKind"],
            target_id=data["targetId"],
            target=data["targetName"],
            detail=data["detail"],
        )


@dataclass(frozen=True)
class TrailPage:
    entries: list[TrailEntry]
    next_cursor: str | None
    prev_cursor: str | None = None


@dataclass(frozen=True)
class MoneyRequest:
    """A deposit or a withdrawal (`kind`), as the account service lists it: who asked, who decided, when."""

    kind: str  # deposit | withdrawal
    id: str
    customer_id: str
    asset: str
    amount: Decimal
    iban: str | None
    status: str
    requested_by: str | None
    requested_at: datetime
    decided_by: str | None
    decided_at: datetime | None

    @property
    def waiting(self) -> bool:
        """Still waiting for an admin's decision."""
        return self.status == "REQUESTED"

    @classmethod
    def of(cls, kind: str, data: dict[str, Any]) -> MoneyRequest:
        decided_at = data.get("decidedAt")
        return cls(
            kind=kind,
            id=data["id"],
            customer_id=data["customerId"],
            asset=data.get("assetName", CASH),
            amount=decimal(data["amount"]),
            iban=data.get("iban"),
            status=data["status"],
            requested_by=data.get("requestedBy"),
            requested_at=moment(data["requestedAt"]),
            decided_by=data.get("decidedBy"),
            decided_at=moment(decided_at) if decided_at else None,
        )


@dataclass(frozen=True)
class RequestPage:
    requests: list[MoneyRequest]
    next_cursor: str | None
    prev_cursor: str | None = None


@dataclass(frozen=True)
class UserRecord:
    id: str
    username: str
    role: str
    created_at: datetime
    disabled: bool = False

    @property
    def is_customer(self) -> bool:
        return self.role == "customer"

    @classmethod
    def of(cls, data: dict[str, Any]) -> UserRecord:
        created = moment(data["createdAt"])
        return cls(data["id"], data["username"], data["role"], created, bool(data.get("disabled")))


@dataclass(frozen=True)
class Health:
    """One component's answer to its health check."""

    component: str
    ok: bool
    detail: str
