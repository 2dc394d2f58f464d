"""Rate cards: file format, price periods, markets by calling code, message and call prices."""

from __future__ import annotations

import calendar
from decimal import Decimal
from pathlib import Path

import pytest

import exporter.webhooks
from exporter.labels import CATEGORIES, OTHER, bounded
from exporter.webhooks.ratecard import (
    SERVICE_CHARGED_FROM,
    RateCardError,
    charged_by_meta,
    load_rate_card,
    parse_rate_card,
)

EXAMPLE = Path(exporter.webhooks.__file__).parent / "ratecards" / "example-usd.toml"
FIXTURES = Path(__file__).parents[1] / "fixtures" / "ratecards"
AUGUST_2025 = calendar.timegm((2025, 8, 15, 12, 0, 0))
SEPTEMBER_2026 = calendar.timegm((2026, 9, 15, 12, 0, 0))
NOVEMBER_2026 = calendar.timegm((2026, 11, 15, 12, 0, 0))


def card(**markets):
    return parse_rate_card({"currency": "usd", "markets": markets})


def test_the_shipped_example_loads_and_prices_by_recipient_market():
    """The example card prices a German marketing message at Meta's German rate."""
    c = load_rate_card(EXAMPLE)
    assert c.currency == "USD"
    assert c.message_price("+49 176 0000000", "marketing", at=AUGUST_2025) == Decimal("0.1365")
    assert c.message_price("917600000000", "authentication_international",
                           at=AUGUST_2025) == Decimal("0.0280")
    assert c.message_price("33612345678", "utility", at=AUGUST_2025) == Decimal("0.0077")


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


def test_the_example_prices_a_month_before_and_after_october_2026_by_the_card_in_force():
    """September 2026 is priced by the older period and November 2026 by the newer one."""
    c = load_rate_card(EXAMPLE)
    assert c.message_price("5511999990000", "marketing", at=SEPTEMBER_2026) == Decimal("0.0625")
    assert c.message_price("5511999990000", "marketing", at=NOVEMBER_2026) == Decimal("0.0782")
    assert c.message_price("4917600000000", "service", at=SEPTEMBER_2026) is None
    assert c.message_price("4917600000000", "service", at=NOVEMBER_2026) == Decimal("0.0550")


def test_the_examples_current_period_prices_service_and_names_every_auth_international_market():
    """From October 2026 each market with a utility price prices service at it, and each of
    Meta's eighteen authentication-international markets (nine more since 2026-10-01) is its
    own market, unpriced where no figure was found rather than priced as "Other"."""
    period = load_rate_card(EXAMPLE).period_at(NOVEMBER_2026)
    assert period is not None
    for market in period.markets.values():
        if "utility" in market.messages:
            assert market.messages["service"] == market.messages["utility"], market.name
    numbers = {"Egypt": "201001234567", "India": "919812345678", "Indonesia": "6281234567890",
               "Malaysia": "60123456789", "Nigeria": "2348012345678", "Pakistan": "923001234567",
               "Saudi Arabia": "966501234567", "South Africa": "27821234567",
               "UAE": "971501234567", "Bangladesh": "8801712345678", "Iraq": "9647701234567",
               "Nepal": "9779801234567", "Sri Lanka": "94771234567",
               "Kazakhstan": "77011234567", "Kuwait": "96550012345", "Morocco": "212612345678",
               "Oman": "96891234567", "Ukraine": "380501234567"}
    for name, number in numbers.items():
        found = period.market_of(number)
        assert found is not None
        assert found.name == name
    card = load_rate_card(EXAMPLE)
    assert card.message_price("77011234567", "authentication", at=NOVEMBER_2026) is None
    russia = period.market_of("79161234567")  # +7 but not Kazakhstan's +76/+77
    assert russia is not None
    assert russia.name == "Other"


def test_every_price_in_the_examples_current_period_says_where_it_comes_from():
    """Each price line of the October 2026 period carries a sourced, placeholder or approximate
    tag, so no figure passes for a verified list price."""
    text = EXAMPLE.read_text(encoding="utf-8").split("valid_from = 2026-10-01", 1)[1]
    keys = {*CATEGORIES, "call_per_minute"}
    lines = [line for line in text.splitlines() if line.split("=")[0].strip() in keys]
    assert len(lines) > 50
    for line in lines:
        assert any(tag in line for tag in ("[sourced 3P 20", "[placeholder]", "[approximate]")), (
            line)


def test_a_card_without_periods_is_one_period_valid_forever():
    """The format without [[period]] prices the same at any time, and when no time is given."""
    c = load_rate_card(FIXTURES / "flat-2025-07.toml")
    assert len(c.periods) == 1
    for at in (0.0, AUGUST_2025, NOVEMBER_2026, 4e9, None):
        assert c.message_price("5511999990000", "marketing", at=at) == Decimal("0.0625")
        assert c.message_price("33612345678", "utility", at=at) == Decimal("0.0077")


def test_each_period_starts_at_its_valid_from_and_an_offset_is_honoured():
    """A message one second before a period's start has the older price, at its start the newer;
    2026-10-01T00:00:00-03:00 starts at 03:00 UTC."""
    c = load_rate_card(FIXTURES / "periods-2026.toml")
    january = calendar.timegm((2026, 1, 1, 0, 0, 0))
    assert c.message_price("5511999990000", "marketing", at=january - 1) == Decimal("0.0625")
    assert c.message_price("5511999990000", "marketing", at=january) == Decimal("0.0782")
    october_sao_paulo = calendar.timegm((2026, 10, 1, 3, 0, 0))
    assert c.message_price("5511999990000", "service", at=october_sao_paulo - 1) is None
    assert c.message_price("5511999990000", "service", at=october_sao_paulo) == Decimal("0.0085")


def test_before_the_first_period_nothing_is_priced():
    """An event older than the card's first period is unpriced, not priced by a later card."""
    c = load_rate_card(FIXTURES / "periods-2026.toml")
    before = calendar.timegm((2025, 6, 30, 23, 59, 59))
    assert c.message_price("5511999990000", "marketing", at=before) is None
    assert c.call_price("5511999990000", 60, at=before) is None


def test_without_a_time_the_period_in_force_now_prices():
    """Called without `at`, a card prices by the period that has started, not one to come."""
    c = parse_rate_card({"currency": "USD", "period": [
        {"valid_from": "2020-01-01", "markets": {"DE": {"calling_codes": ["49"],
                                                        "marketing": "0.10"}}},
        {"valid_from": "2999-01-01", "markets": {"DE": {"calling_codes": ["49"],
                                                        "marketing": "0.99"}}}]})
    assert c.message_price("4917600000000", "marketing") == Decimal("0.10")
    far = calendar.timegm((2999, 1, 2, 0, 0, 0))
    assert c.message_price("4917600000000", "marketing", at=far) == Decimal("0.99")


def test_group_categories_are_labels_and_a_card_can_price_them():
    """group_marketing, group_utility and group_service are label values of their own, and a
    group id, being no phone number, is priced by the default market."""
    for category in ("group_marketing", "group_utility", "group_service"):
        assert bounded(category, CATEGORIES) == category
    c = load_rate_card(FIXTURES / "periods-2026.toml")
    group = "120363" + "0" * 50  # a group id: 56 characters, no calling code to read
    assert c.message_price(group, "group_marketing", at=NOVEMBER_2026) == Decimal("0.05")
    assert c.message_price(group, "group_service", at=NOVEMBER_2026) == Decimal("0.01")
    assert c.message_price("US.1234567890123", "marketing", at=NOVEMBER_2026) is None
    example = load_rate_card(EXAMPLE).market_of(group, at=NOVEMBER_2026)
    assert example is not None
    assert example.name == "Other"  # not North America for its leading 1


def test_an_unknown_category_is_other_and_unpriced_and_a_card_cannot_price_it():
    """A category Meta adds later is labelled `other` and has no price; a card naming it is
    refused rather than read."""
    assert bounded("business_agent", CATEGORIES) == OTHER
    c = load_rate_card(EXAMPLE)
    assert c.message_price("4917600000000", "business_agent", at=NOVEMBER_2026) is None
    assert c.message_price("4917600000000", OTHER, at=NOVEMBER_2026) is None
    with pytest.raises(RateCardError, match="business_agent"):
        card(DE={"calling_codes": ["49"], "business_agent": 0.01})


@pytest.mark.parametrize(("category", "pricing_type", "at", "charged"), [
    ("service", "", SEPTEMBER_2026, False),
    ("service", "", SERVICE_CHARGED_FROM, True),
    ("service", "regular", NOVEMBER_2026, True),
    ("utility", "free_customer_service", SEPTEMBER_2026, False),
    ("marketing", "free_entry_point", NOVEMBER_2026, False),
    ("marketing", "regular", SEPTEMBER_2026, True),
    ("business_agent", "", NOVEMBER_2026, True),
    ("group_service", "regular", NOVEMBER_2026, True),
])
def test_meta_charges_service_from_october_2026_and_never_takes_the_unknown_as_free(
        category, pricing_type, at, charged):
    """Without `billable`, only a free_* type or a service message before 2026-10-01 is free."""
    assert charged_by_meta(category, pricing_type, at) is charged


def period_card(*periods):
    return {"currency": "USD", "period": list(periods)}


DE = {"DE": {"calling_codes": ["49"], "marketing": 0.1}}


@pytest.mark.parametrize(("raw", "message"), [
    (period_card({"markets": DE}), r"^period 1: valid_from is required"),
    (period_card({"valid_from": "soon", "markets": DE}), r"^period 1: valid_from 'soon'"),
    (period_card({"valid_from": "2026-10-01T00:00:00", "markets": DE}), "UTC offset"),
    (period_card({"valid_from": "2026-10-01", "markets": DE},
                 {"valid_from": "2026-01-01", "markets": DE}),
     r"^period 2 \(valid_from 2026-01-01\): valid_from must be later"),
    (period_card({"valid_from": "2026-01-01", "markets": DE},
                 {"valid_from": "2026-10-01",
                  "markets": {"United Kingdom": {"marketing": "cheap"}}}),
     r'^period 2 \(valid_from 2026-10-01\): markets\."United Kingdom"\.marketing must be'),
    (period_card({"valid_from": "2026-10-01", "markets": DE, "currency": "EUR"}),
     r"^period 1 \(valid_from 2026-10-01\): unknown key 'currency'"),
    (period_card({"valid_from": "2026-10-01"}), r"^period 1 \(valid_from 2026-10-01\): needs"),
    (period_card({"valid_from": "2026-10-01", "markets": DE}) | {"markets": DE},
     "markets belongs inside each"),
    (period_card(), "one or more"),
    (period_card("2026-10-01"), r"^period 1 must be a \[\[period\]\] table"),
])
def test_bad_periods_are_refused_naming_the_period_and_the_key(raw, message):
    """A mistake inside a period names that period (and its start) before the key."""
    with pytest.raises(RateCardError, match=message):
        parse_rate_card(raw)


def test_an_error_in_a_period_file_is_one_line_with_the_file_the_period_and_the_key(tmp_path):
    """load_rate_card reports the path, period and key together on one line."""
    text = (FIXTURES / "periods-2026.toml").read_text(encoding="utf-8")
    broken = tmp_path / "card.toml"
    broken.write_text(text.replace("service = 0.0085", "service = -0.0085"), encoding="utf-8")
    with pytest.raises(RateCardError) as caught:
        load_rate_card(broken)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{broken}: period 3 (valid_from 2026-10-01T00:00:00-03:00): "
                              f"markets.Brazil.service must be a price of 0 or more")


def test_a_market_name_with_a_line_break_stays_on_one_line():
    """Market names are quoted as TOML writes them, so no name can split an error message."""
    with pytest.raises(RateCardError) as caught:
        card(**{"Line\nBreak": {"marketing": -1}})
    assert "\n" not in str(caught.value)
    assert 'markets."Line\\nBreak".marketing' in str(caught.value)


def test_a_user_known_only_by_bsuid_is_priced_by_the_country_it_starts_with():
    """Without a phone number the market listing the BSUID's ISO country prices; a phone's
    calling code still comes first, and an unlisted country falls to the default market."""
    c = load_rate_card(EXAMPLE)
    assert c.message_price("", "marketing", NOVEMBER_2026, country="BR") == Decimal("0.0782")
    assert c.message_price("", "marketing", NOVEMBER_2026, country="br") == Decimal("0.0782")
    assert c.message_price("4917600000000", "marketing", NOVEMBER_2026,
                           country="BR") == Decimal("0.1365")
    assert c.message_price("", "marketing", NOVEMBER_2026, country="FR") == Decimal("0.0604")
    assert c.call_price("", 60, NOVEMBER_2026, country="DE") == Decimal("0.060")


@pytest.mark.parametrize(("markets", "message"), [
    ({"A": {"countries": "DE"}}, r"markets\.A\.countries must be a list"),
    ({"A": {"countries": ["DEU"]}}, r"markets\.A\.countries: 'DEU' is not"),
    ({"A": {"countries": ["DE"]}, "B": {"countries": ["de"]}}, "country DE is in both"),
])
def test_bad_countries_are_refused_naming_the_market(markets, message):
    """A market's countries must be distinct 2-letter ISO codes."""
    with pytest.raises(RateCardError, match=message):
        card(**markets)
