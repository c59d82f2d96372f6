"""Names vulture cannot see being used (tests/unit/test_code_health.py reads this file with the code)."""

from oms.backoffice.audits import AuditRun
from oms.backoffice.charts import LineChart, PriceChart
from oms.backoffice.confirm import Review
from oms.backoffice.models import MoneyRequest, Order
from oms.backoffice.ticker import TickerItem
from oms.backoffice.views import Pager
from oms.cli import Component
from oms.kernel.sse import EventStreamResponse

# Read by the Jinja templates.
LineChart.usable_path  # noqa: B018  (templates/macros.html)
Order.funds_reserved  # noqa: B018  (templates/_order_row.html, _order_status.html)
PriceChart.last_path  # noqa: B018  (templates/_price_chart.html)
PriceChart.bid_path  # noqa: B018  (templates/_price_chart.html)
PriceChart.ask_path  # noqa: B018  (templates/_price_chart.html)
TickerItem.arrow  # noqa: B018  (templates/_ticker_item.html)
TickerItem.spoken  # noqa: B018  (templates/_ticker_item.html)
AuditRun.finished_at  # noqa: B018  (templates/admin/system.html)
MoneyRequest.requested_by  # noqa: B018  (templates/_requests_table.html)
MoneyRequest.decided_by  # noqa: B018  (templates/_requests_table.html)
# Chosen on the command line by value (`oms serve backoffice`).
Component.backoffice  # noqa: B018
# Read by Starlette and by FastAPI's OpenAPI.
EventStreamResponse.media_type  # noqa: B018
Review.button  # noqa: B018  (templates/confirm.html)
Review.danger  # noqa: B018  (templates/confirm.html)
Pager.older  # noqa: B018  (templates/macros.html)
