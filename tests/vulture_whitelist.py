"""Names vulture cannot see being used (tests/unit/test_code_health.py reads this file with the code)."""

from oms.backoffice.charts import LineChart
from oms.backoffice.models import MoneyRequest, Order
from oms.backoffice.system import AuditRun
from oms.cli import Component

# Read by the Jinja templates.
LineChart.usable_path  # noqa: B018  (templates/macros.html)
Order.funds_reserved  # noqa: B018  (templates/_order_row.html, _order_status.html)
AuditRun.finished_at  # noqa: B018  (templates/admin/system.html)
MoneyRequest.requested_by  # noqa: B018  (templates/_requests_table.html)
MoneyRequest.decided_by  # noqa: B018  (templates/_requests_table.html)
# Chosen on the command line by value (`oms serve backoffice`).
Component.backoffice  # noqa: B018
# The market contract (kernel/market.py), used by the market service and the order service's execution,
# which land after it (issue 12): remove these lines when they do.
from oms.kernel import market  # noqa: E402

market.MARKET_STREAM  # noqa: B018
market.MARKET_SUBJECTS  # noqa: B018
market.DEFAULT_COLLAR  # noqa: B018
market.quote_subject  # noqa: B018
market.instrument_subject  # noqa: B018
market.MarketData  # noqa: B018
market.MarketBoard.instruments  # noqa: B018
