"""The order service's OpenAPI document (what schemathesis and clients read) describes the market fields and
the order stream."""

from __future__ import annotations

from oms.kernel.settings import Settings
from oms.order.app import create_app


def test_openapi_has_the_order_stream_and_the_market_fields() -> None:
    document = create_app(Settings()).openapi()
    stream = document["paths"]["/api/v1/orders/stream"]["get"]
    assert "text/event-stream" in stream["responses"]["200"]["content"]
    schemas = document["components"]["schemas"]
    assert {"orderType", "timeInForce"} <= set(schemas["PlaceOrderRequest"]["properties"])
    assert {"orderType", "timeInForce", "executedPrice"} <= set(schemas["OrderView"]["properties"])
