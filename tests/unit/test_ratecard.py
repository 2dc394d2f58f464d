"""Rate cards: file format, markets by calling code, message and call prices."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

import exporter.webhooks
from exporter.webhooks.ratecard import RateCardError, load_rate_card, parse_rate_card

EXAMPLE = Path(exporter.webhooks.__file__).parent / "ratecards" / "example-usd.toml"


def card(**markets):
    return parse_rate_card({"currency": "usd", "markets": markets})


def test_the_shipped_example_loads_and_prices_by_recipient_market():
    """The example card prices a German marketing message at Meta's German rate."""
    c = load_rate_card(EXAMPLE)
    assert c.currency == "USD"
    assert c.message_price("+49 176 0000000", "marketing") == Decimal("0.1365")
    assert c.message_price("917600000000", "authentication_international") == Decimal("0.0280")
    assert c.message_price("33612345678", "utility") == Decimal("0.0077")  # default market


def test_the_longest_calling_code_wins():
    """A NANP area code with its own market beats the bare +1."""
    c = card(NA={"calling_codes": ["1"], "marketing": 0.025},
             Jamaica={"calling_codes": ["1876"], "marketing": 0.07})
    assert c.message_price("18761234567", "marketing") == Decimal("0.07")
    assert c.message_price("12125550100", "marketing") == Decimal("0.025")


def test_missing_markets_and_categories_are_unpriced_not_free():
    """No default market and no price for the category both give None."""
    c = card(DE={"calling_codes": ["49"], "marketing": 0.1365})
    assert c.message_price("33612345678", "marketing") is None
    assert c.message_price("4917600000000", "utility") is None


@pytest.mark.parametrize(("seconds", "pulses"), [(1, 1), (6, 1), (7, 2), (56, 10), (60, 10)])
def test_calls_are_billed_per_started_six_second_pulse(seconds, pulses):
    """Meta bills 6-second pulses and rounds a partial pulse up (56 s is 10 pulses)."""
    c = card(DE={"calling_codes": ["49"], "call_per_minute": "0.06"})
    assert c.call_price("4917600000000", seconds) == Decimal("0.006") * pulses
    assert card(DE={"calling_codes": ["49"]}).call_price("4917600000000", 60) is None


@pytest.mark.parametrize(("raw", "message"), [
    ({"markets": {"A": {}}}, "currency"),
    ({"currency": "USD"}, "at least one"),
    ({"currency": "USD", "markets": {"A": {"marketing": -1}}}, "markets.A.marketing"),
    ({"currency": "USD", "markets": {"A": {"marketing": "cheap"}}}, "markets.A.marketing"),
    ({"currency": "USD", "markets": {"A": {"marketting": 1}}}, "marketting"),
    ({"currency": "USD", "markets": {"A": {"calling_codes": ["+4x"]}}}, "calling code"),
    ({"currency": "USD", "markets": {"A": {"calling_codes": ["49"]},
                                     "B": {"calling_codes": ["49"]}}}, "both"),
    ({"currency": "USD", "default_market": "Z", "markets": {"A": {}}}, "default_market"),
    ({"currency": "USD", "markets": {"A": {}}, "tiers": {}}, "tiers"),
])
def test_bad_cards_are_refused_naming_the_entry(raw, message):
    """Every mistake in a card is an error that says where it is."""
    with pytest.raises(RateCardError, match=message):
        parse_rate_card(raw)


def test_unreadable_files_name_the_file(tmp_path):
    """A missing file or broken TOML names the path."""
    with pytest.raises(RateCardError, match="cannot read"):
        load_rate_card(tmp_path / "nope.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("currency = \n")
    with pytest.raises(RateCardError, match=r"broken\.toml is not valid TOML"):
        load_rate_card(broken)
