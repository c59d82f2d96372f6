"""The back office's instruments form: what it sends the market service, and its messages per field."""

from __future__ import annotations

from oms.backoffice.instruments import InstrumentForm


def test_the_back_offices_instrument_form_sends_only_what_was_filled_in() -> None:
    form = InstrumentForm(symbol=" thyao ", name="Türk Hava Yolları", tick="0.25", reference="312.25")
    assert form.body() == {"name": "Türk Hava Yolları", "tickSize": "0.25", "referencePrice": "312.25"}
    assert form.symbol == "THYAO"
    halted_band = InstrumentForm(symbol="AAPL", band="15")
    assert halted_band.body() == {"priceBandPercent": "15"}
    wrong = InstrumentForm(symbol="", lot="-1", reference="a lot")
    assert wrong.body() is None
    assert set(wrong.errors) == {"symbol", "lot", "reference"}
