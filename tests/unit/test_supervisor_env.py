"""What `oms up` passes on to its children: the market's close and collar too (found by the chaos suite:
DAY orders never expired at an OMS_MARKET_CLOSE given to `oms up`, its children closed at the default)."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from oms.kernel.settings import Settings
from oms.runtime.supervisor import System


def test_the_market_settings_given_to_oms_up_reach_its_children(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path, market_close="11:38:35 UTC", market_order_collar="0", execution="market",
        admin_username="admin", admin_password="admin-password-1",
    )  # fmt: skip
    env = System(settings, Console()).child_env()
    assert (env["OMS_MARKET_CLOSE"], env["OMS_MARKET_ORDER_COLLAR"]) == ("11:38:35 UTC", "0")
    assert env["OMS_EXECUTION"] == "market"
    defaults = System(Settings(data_dir=tmp_path, admin_password="admin-password-1"), Console()).child_env()
    assert "OMS_MARKET_CLOSE" not in defaults  # the children's own default, the same
