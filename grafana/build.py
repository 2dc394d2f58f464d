"""The Grafana dashboards for whatsapp-usage-exporter, generated with grafana-foundation-sdk.

    python grafana/build.py           write grafana/*.json and the Helm chart's copies
    python grafana/build.py --check   exit 1, listing the files that differ from what it would write

Every query filters by the dashboard variables `client`, `waba` and `channel` where its series
carry those labels. The webhook series have no `client_id`: they are joined with
`whatsapp_channel_info` on (waba_id, channel_id), which also hands them a `client_id` to group by
and leaves out numbers discovery does not know (`pn_...`, `other`). The exporter's own metrics
are per process; where they carry a `waba_id` they follow the `waba` filter.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builder
from grafana_foundation_sdk.builders import dashboard as dashboard_builder
from grafana_foundation_sdk.builders import prometheus as prometheus_builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import prometheus as prometheus_model

ROOT = Path(__file__).resolve().parents[1]
OUTPUT_DIRS = (ROOT / "grafana", ROOT / "helm" / "whatsapp-usage-exporter" / "dashboards")
TAGS = ["whatsapp", "360dialog"]
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")

# Label filters, used with =~ so that "All" (".*") and multi-selections both work.
POLLED = 'client_id=~"$client", waba_id=~"$waba", channel_id=~"$channel"'
HOOK = 'waba_id=~"$waba", channel_id=~"$channel"'
CHANNELS = f"max by (client_id, waba_id, channel_id) (whatsapp_channel_info{{{POLLED}}})"

POLLED_NOTE = ("Polled from 360dialog's Get Channel Usage: authoritative, as fresh as the rate "
               "limits allow (see the data age on the exporter health dashboard).")
HOOK_NOTE = ("From webhooks as they arrive: a real-time estimate priced by the exporter's rate "
             "card; the polled numbers are the truth. Numbers discovery does not know are left "
             "out by the client filter's join with whatsapp_channel_info.")
MONTH_NOTE = "The counters hold the current UTC billing month and restart from zero each month."
EXPORTER_NOTE = "The exporter's own metric, for the whole process: the filters do not apply."
MONEY_NOTE = "Money is in the units of the currency shown in the legend (no conversion)."
UNKNOWN_COST_NOTE = ("A row whose usage came without a cost (Meta omits it for a business on a "
                     "solution partner's credit line) has no cost series: its cost is unknown, "
                     "not zero, and the 'Points without cost' panel counts such points.")


def hooked(expr: str) -> str:
    """A webhook series expression restricted to the selected clients' channels."""
    return f"({expr}) * on (waba_id, channel_id) group_left (client_id) {CHANNELS}"


def zero_if_none(expr: str, label: str | None = None) -> str:
    """`expr`, or a single 0 when it has no series yet (no errors, no 429s...)."""
    if label is None:
        return f"({expr}) or vector(0)"
    return f'({expr}) or on () label_replace(vector(0), "{label}", "none", "", "")'


def query(expr: str, legend: str = "__auto", *, instant: bool = False,
          table_format: bool = False) -> prometheus_builder.Dataquery:
    q = prometheus_builder.Dataquery().expr(expr).legend_format(legend).datasource(DATASOURCE)
    q = q.instant() if instant else q.range()
    if table_format:
        q = q.format(prometheus_model.PromQueryFormat.TABLE)
    return q


PanelBuilder = timeseries.Panel | stat.Panel | bargauge.Panel | table.Panel


class Board:
    """A dashboard under construction: numbers panels and lays them out row by row."""

    def __init__(self, uid: str, title: str, description: str, time_from: str,
                 min_interval: str) -> None:
        self._next_id = 1
        self._min_interval = min_interval
        self.builder = (
            dashboard_builder.Dashboard(title).uid(uid).description(description).tags(TAGS)
            .refresh("1m").time(time_from, "now").timezone("utc").editable()
            .tooltip(model.DashboardCursorSync.CROSSHAIR)
        )
        for variable in variables():
            self.builder.with_variable(variable)

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def row(self, title: str) -> None:
        self.builder.with_row(dashboard_builder.Row(title).id(self._id()))

    def add(self, panel: PanelBuilder, title: str, description: str,
            targets: list[prometheus_builder.Dataquery], *, width: int, height: int) -> None:
        for ref, target in zip("ABCDEFGH", targets, strict=False):
            panel.with_target(target.ref_id(ref))
        if any("[$__interval]" in target.build().expr for target in targets):
            # increase() needs two samples inside each interval, and a channel's usage moves
            # only when it is polled: a floor under $__interval keeps short ranges meaningful.
            panel.interval(self._min_interval)
        self.builder.with_panel(
            panel.id(self._id()).title(title).description(description).datasource(DATASOURCE)
            .span(width).height(height))

    def json(self) -> dict[str, object]:
        encoded: dict[str, object] = json.loads(json.dumps(self.builder.build(), cls=JSONEncoder))
        return encoded


def variables() -> list[dashboard_builder.DatasourceVariable | dashboard_builder.QueryVariable]:
    def pick(name: str, label: str, values: str) -> dashboard_builder.QueryVariable:
        return (
            dashboard_builder.QueryVariable(name).label(label).datasource(DATASOURCE)
            .query(values).multi(True).include_all(True).all_value(".*")
            .current(model.VariableOption(selected=True, text="All", value="$__all"))
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_CASE_INSENSITIVE_ASC))

    return [
        dashboard_builder.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        pick("client", "Client", "label_values(whatsapp_channel_info, client_id)"),
        pick("waba", "WABA",
             'label_values(whatsapp_channel_info{client_id=~"$client"}, waba_id)'),
        pick("channel", "Channel",
             'label_values(whatsapp_channel_info{client_id=~"$client", waba_id=~"$waba"}, '
             "channel_id)"),
    ]


def over_time(unit: str, *, bars: bool = False, stacked: bool = False) -> timeseries.Panel:
    panel = (timeseries.Panel().unit(unit).fill_opacity(20 if not bars else 80)
             .legend(common_builder.VizLegendOptions().display_mode(common.LegendDisplayMode.TABLE)
                     .placement(common.LegendPlacement.BOTTOM).show_legend(True)
                     .calcs(["sum"] if bars else ["lastNotNull", "max"])))
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS)
    if stacked:
        panel = panel.stacking(common_builder.StackingConfig().mode(common.StackingMode.NORMAL))
    return panel


def big_number(unit: str, decimals: int | None = None) -> stat.Panel:
    panel = (stat.Panel().unit(unit).graph_mode(common.BigValueGraphMode.NONE)
             .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"])
                             .values(False)))
    return panel if decimals is None else panel.decimals(decimals)


def bars(unit: str, decimals: int | None = None) -> bargauge.Panel:
    panel = (bargauge.Panel().unit(unit).orientation(common.VizOrientation.HORIZONTAL)
             .display_mode(common.BarGaugeDisplayMode.BASIC)
             .reduce_options(common_builder.ReduceDataOptions().calcs(["lastNotNull"])
                             .values(False)))
    return panel if decimals is None else panel.decimals(decimals)


def merged_table(rename: dict[str, str]) -> table.Panel:
    """Instant queries in table format merged into one row per label set."""
    # Alignment and inspect spelled out: the SDK's model adds them when it reads the JSON back.
    return (table.Panel().align(common.FieldTextAlignment.AUTO).inspect(False)
            .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
            .with_transformation(model.DataTransformerConfig(id_val="organize", options={
                "excludeByName": {"Time": True}, "renameByName": rename})))


def thresholds(*steps: tuple[float | None, str]) -> dashboard_builder.ThresholdsConfig:
    return (dashboard_builder.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE)
            .steps([model.Threshold(value=v, color=c) for v, c in steps]))


# --- Spend budgets ---------------------------------------------------------------------------

# The forecast's recent rate, as in the recording rules (the chart's alerts.spendForecastWindow).
SPEND_WINDOW = "7d"
# Seconds from each evaluation until the next UTC month starts.
MONTH_LEFT = "scalar((days_in_month() - day_of_month() + 1) * 86400 - time() % 86400)"
# The offset in days that lands on the same day of the previous month: that month's length, or
# today's day of the month where the previous month is shorter (then its last day).
PREVIOUS_SAME_DAY = ("clamp_min(days_in_month(time() - day_of_month() * 86400), "
                     "scalar(day_of_month()))")
BUDGET = 'max by (client_id, currency) (whatsapp_spend_budget{client_id=~"$client", waba_id=""})'
BUDGET_NOTE = ("Budgets come from the exporter's D360_SPEND_BUDGETS file (whatsapp_spend_budget); "
               "a budget compares only with spend in its own currency. Spend is messaging plus "
               "call cost.")
FORECAST_NOTE = (f"The forecast is the month so far plus the average rate of the last "
                 f"{SPEND_WINDOW} for the time left in the month, as the budget alerts compute "
                 f"it; with less history than that it reads low.")


def spend(by: str, offset: str = "") -> str:
    """Month-to-date messaging plus call cost; `or` keeps clients that have only one of them
    (their label sets differ, so nothing is dropped as a duplicate)."""
    shift = f" offset {offset}" if offset else ""
    return (f"sum by ({by}) (whatsapp_cost_total{{{POLLED}}}{shift} "
            f"or whatsapp_call_cost_total{{{POLLED}}}{shift})")


def spend_forecast(by: str) -> str:
    rate = (f"sum by ({by}) (rate(whatsapp_cost_total{{{POLLED}}}[{SPEND_WINDOW}]) "
            f"or rate(whatsapp_call_cost_total{{{POLLED}}}[{SPEND_WINDOW}]))")
    return f"{spend(by)} + {rate} * {MONTH_LEFT}"


def spend_previous_month(by: str) -> str:
    """The month-to-date spend at the same day and time of the previous month: one offset per
    possible month length, of which the one that fits the evaluation time is kept."""
    return " or ".join(f"({spend(by, f'{days}d')} and on () ({PREVIOUS_SAME_DAY} == {days}))"
                       for days in (28, 29, 30, 31))


# --- Usage & costs ---------------------------------------------------------------------------


def usage_costs() -> dict[str, object]:
    b = Board("wue-usage-costs", "WhatsApp usage & costs",
              "Messages and their cost per client, WABA, channel and Meta pricing category, as "
              "360dialog's Hub Insights shows them, with the real-time webhook estimate beside "
              "the polled truth.", "now-7d", "5m")
    msgs = f"whatsapp_messages_total{{{POLLED}}}"
    cost = f"whatsapp_cost_total{{{POLLED}}}"

    b.row("This month (polled)")
    b.add(big_number("short", 0), "Messages this month",
          f"All messages of the selected channels this month. {POLLED_NOTE} {MONTH_NOTE}",
          [query(f"sum({msgs})", "messages", instant=True)], width=6, height=5)
    b.add(big_number("short", 2), "Messaging cost this month",
          f"Messaging cost this month per currency. {POLLED_NOTE} {MONTH_NOTE} {MONEY_NOTE} "
          f"{UNKNOWN_COST_NOTE}",
          [query(f"sum by (currency) ({cost})", "{{currency}}", instant=True)], width=6, height=5)
    b.add(big_number("short", 0), "Channels",
          "Channels discovery found for the selection (whatsapp_channel_info).",
          [query(f"count({CHANNELS})", "channels", instant=True)], width=3, height=5)
    b.add(big_number("short", 0).thresholds(thresholds((None, "green"), (1, "orange"))),
          "Points without cost",
          "Usage data points this month that came without a cost "
          "(whatsapp_usage_points_without_cost_total): the cost of their rows is unknown and "
          f"left out of every cost panel, not counted as zero. {POLLED_NOTE}",
          [query(zero_if_none(
              f"sum(whatsapp_usage_points_without_cost_total{{{POLLED}}})"), "points",
              instant=True)], width=3, height=5)
    b.add(big_number("s").thresholds(thresholds((None, "green"), (3600, "orange"),
                                                (7200, "red"))),
          "Oldest data",
          "Time since the least recently polled channel of the selection was fetched "
          "(whatsapp_usage_updated_timestamp_seconds): the polled numbers are at most this old.",
          [query(f"max(time() - whatsapp_usage_updated_timestamp_seconds{{{POLLED}}})", "age",
                 instant=True)], width=6, height=5)
    b.add(bars("short", 2), "Cost this month per client",
          f"Month-to-date messaging cost per client. {POLLED_NOTE} {MONEY_NOTE}",
          [query(f"sort_desc(sum by (client_id, currency) ({cost}))",
                 "{{client_id}} ({{currency}})", instant=True)], width=8, height=9)
    b.add(bars("short", 2), "Cost this month per WABA",
          f"Month-to-date messaging cost per WABA (Meta's WABA id). {POLLED_NOTE} {MONEY_NOTE}",
          [query(f"sort_desc(sum by (waba_id, currency) ({cost}))",
                 "{{waba_id}} ({{currency}})", instant=True)], width=8, height=9)
    b.add(bars("short", 2), "Top 10 spenders (channels)",
          f"The ten channels with the highest messaging cost this month. {POLLED_NOTE} "
          f"{MONEY_NOTE}",
          [query(f"topk(10, sum by (client_id, waba_id, channel_id, currency) ({cost}) "
                 f"* on (client_id, waba_id, channel_id) group_left (name) "
                 f"max by (client_id, waba_id, channel_id, name) "
                 f"(whatsapp_channel_info{{{POLLED}}}))",
                 "{{name}} {{channel_id}} ({{currency}})", instant=True)], width=8, height=9)
    b.add(bars("short", 0), "Messages this month by category",
          f"Month-to-date messages per Meta pricing category. {POLLED_NOTE}",
          [query(f"sort_desc(sum by (category) ({msgs}))", "{{category}}", instant=True)],
          width=8, height=8)
    b.add(merged_table({"client_id": "Client", "waba_id": "WABA", "channel_id": "Channel",
                        "currency": "Currency", "Value #A": "Messages", "Value #B": "Cost"})
          .decimals(2),
          "Month to date per channel",
          f"Messages and messaging cost this month per channel. {POLLED_NOTE} {MONEY_NOTE}",
          [query(f"sum by (client_id, waba_id, channel_id) ({msgs})", instant=True,
                 table_format=True),
           query(f"sum by (client_id, waba_id, channel_id, currency) ({cost})", instant=True,
                 table_format=True)], width=16, height=8)
    b.add(bars("short", 2), "Top destinations by cost this month",
          "Month-to-date messaging cost per destination country, over the selected WABAs "
          "(whatsapp_destination_cost_total: Meta's COUNTRY dimension of the usage points, "
          "summed per WABA). A country of 'unknown' means the usage answers named no country: "
          "360dialog may not pass that dimension on; `whatsapp-usage-exporter probe` says "
          f"which. {MONEY_NOTE} {UNKNOWN_COST_NOTE}",
          [query('topk(10, sum by (country, currency) (whatsapp_destination_cost_total'
                 '{waba_id=~"$waba"}))', "{{country}} ({{currency}})", instant=True)],
          width=24, height=8)

    b.row("Over time (polled)")
    b.add(over_time("short", bars=True, stacked=True), "Messages by category",
          f"Messages per interval and pricing category: the increase of the month counters "
          f"(increase() treats the monthly restart as a counter reset). {POLLED_NOTE}",
          [query(f"sum by (category) (increase({msgs}[$__interval]))", "{{category}}")],
          width=12, height=9)
    b.add(over_time("short", bars=True, stacked=True), "Messaging cost by category",
          f"Messaging cost per interval and pricing category. {POLLED_NOTE} {MONEY_NOTE}",
          [query(f"sum by (category, currency) (increase({cost}[$__interval]))",
                 "{{category}} ({{currency}})")], width=12, height=9)
    b.add(over_time("short", bars=True, stacked=True), "Messages by pricing type",
          f"Messages per interval by pricing type (regular, free entry point, free customer "
          f"service...). {POLLED_NOTE}",
          [query(f"sum by (pricing_type) (increase({msgs}[$__interval]))", "{{pricing_type}}")],
          width=12, height=8)
    b.add(over_time("short"), "Month-to-date cost",
          f"The running month-to-date messaging cost per currency; each month's peak is its "
          f"total. It reads the last sample of each day too, so months the exporter backfilled "
          f"(D360_BACKFILL_MONTHS, one sample at each day's end) show as well as scraped "
          f"ones: set a range of months. {POLLED_NOTE} {MONTH_NOTE} {MONEY_NOTE}",
          [query(f"sum by (currency) (last_over_time({cost}[1d]))", "{{currency}}")],
          width=12, height=8)

    b.row("Spend against budget (polled)")
    per_client = "client_id, currency"
    b.add(merged_table({"client_id": "Client", "currency": "Currency", "Value #A": "Spent",
                        "Value #B": "Budget", "Value #C": "Forecast"}).decimals(2),
          "Budgets this month per client",
          f"Month-to-date spend, the monthly budget and the projected month-end spend per "
          f"client. {BUDGET_NOTE} {FORECAST_NOTE} {POLLED_NOTE} {MONEY_NOTE}",
          [query(spend(per_client), instant=True, table_format=True),
           query(BUDGET, instant=True, table_format=True),
           query(spend_forecast(per_client), instant=True, table_format=True)],
          width=12, height=8)
    b.add(bars("percentunit", 0).min(0).thresholds(
              thresholds((None, "green"), (0.8, "orange"), (1, "red"))),
          "Share of budget per client",
          f"Spent so far, and forecast by the month's end, as a share of each client's budget "
          f"(1 is the whole budget). {BUDGET_NOTE} {FORECAST_NOTE}",
          [query(f"sort_desc({spend(per_client)} / on (client_id, currency) {BUDGET})",
                 "{{client_id}} spent", instant=True),
           query(f"sort_desc(({spend_forecast(per_client)}) / on (client_id, currency) "
                 f"{BUDGET})", "{{client_id}} forecast", instant=True)], width=12, height=8)
    b.add(over_time("short"), "Spend, budget and forecast per client",
          f"The running month-to-date spend per client beside its budget and its projected "
          f"month-end spend. {BUDGET_NOTE} {FORECAST_NOTE} {MONTH_NOTE} {MONEY_NOTE}",
          [query(spend(per_client), "{{client_id}} spent ({{currency}})"),
           query(BUDGET, "{{client_id}} budget ({{currency}})"),
           query(spend_forecast(per_client), "{{client_id}} forecast ({{currency}})")],
          width=24, height=9)
    b.add(over_time("short"), "This month against the same days of the previous month",
          f"Month-to-date spend per currency, and what it was at the same day and time of the "
          f"previous month (its last day where that month is shorter). The previous month "
          f"needs that much history in Prometheus, scraped or backfilled. {MONTH_NOTE} "
          f"{MONEY_NOTE}",
          [query(spend("currency"), "this month ({{currency}})"),
           query(spend_previous_month("currency"), "previous month ({{currency}})")],
          width=16, height=8)
    b.add(big_number("percentunit", 0), "This month against the previous",
          "Month-to-date spend per currency as a share of the spend at the same day and time "
          "of the previous month: above 1 is more than then. Empty without a previous month "
          f"of history. {POLLED_NOTE}",
          [query(f"{spend('currency')} / ({spend_previous_month('currency')})",
                 "{{currency}}", instant=True)], width=8, height=8)

    b.row("Balances")
    b.add(bars("short", 2), "Partner balance",
          "The partner's balance per top-up currency, polled from the Partner API. Partner-wide: "
          "the client, WABA and channel filters do not apply.",
          [query("max by (currency) (whatsapp_partner_balance)", "{{currency}}", instant=True)],
          width=6, height=8)
    client_balance = 'max by (client_id, currency) (whatsapp_client_balance{client_id=~"$client"})'
    b.add(bars("short", 2), "Client balances",
          "Each selected client's balance, polled from Get Client Balance.",
          [query(f"sort({client_balance})",
                 "{{client_id}} ({{currency}})", instant=True)], width=9, height=8)
    b.add(bars("short", 2), "Lowest channel balances",
          "The ten selected channels with the lowest balance, polled from Get Channel Balance.",
          [query("bottomk(10, max by (client_id, waba_id, channel_id, currency) "
                 f"(whatsapp_channel_balance{{{POLLED}}}))",
                 "{{channel_id}} ({{currency}})", instant=True)], width=9, height=8)
    b.add(over_time("short"), "Client balances over time",
          "Each selected client's balance as polled.",
          [query(client_balance,
                 "{{client_id}} ({{currency}})")], width=24, height=8)

    b.row("Real-time webhook estimate vs polled truth")
    hook_msgs = hooked(
        f"increase(whatsapp_webhook_messages_total{{{HOOK}}}[$__interval])")
    hook_cost = hooked(
        f"increase(whatsapp_webhook_estimated_cost_total{{{HOOK}}}[$__interval])")
    b.add(over_time("short"), "Messages: webhook vs polled",
          f"Messages per interval from webhooks (real-time) and from polling (authoritative, "
          f"lands in steps as channels are polled). {HOOK_NOTE}",
          [query(f"sum({hook_msgs})", "webhook estimate"),
           query(f"sum(increase({msgs}[$__interval]))", "polled")], width=12, height=8)
    b.add(over_time("short"), "Cost: webhook estimate vs polled",
          f"Messaging cost per interval: the webhook estimate from the rate card beside the "
          f"polled cost. {HOOK_NOTE} {MONEY_NOTE}",
          [query(f"sum by (currency) ({hook_cost})", "webhook estimate ({{currency}})"),
           query(f"sum by (currency) (increase({cost}[$__interval]))", "polled ({{currency}})")],
          width=12, height=8)
    b.add(big_number("short", 0), "Messages in range: webhook vs polled",
          f"Messages over the dashboard's time range, webhook estimate and polled. {HOOK_NOTE}",
          [query(f"sum({hooked(f'increase(whatsapp_webhook_messages_total{{{HOOK}}}[$__range])')})",
                 "webhook estimate", instant=True),
           query(f"sum(increase({msgs}[$__range]))", "polled", instant=True)],
          width=6, height=6)
    b.add(big_number("short", 2), "Cost in range: webhook vs polled",
          f"Messaging cost over the dashboard's time range, webhook estimate and polled. "
          f"{HOOK_NOTE} {MONEY_NOTE}",
          [query("sum by (currency) ("
                 + hooked(f"increase(whatsapp_webhook_estimated_cost_total{{{HOOK}}}[$__range])")
                 + ")", "webhook estimate ({{currency}})", instant=True),
           query(f"sum by (currency) (increase({cost}[$__range]))", "polled ({{currency}})",
                 instant=True)], width=6, height=6)
    b.add(big_number("short", 0).thresholds(thresholds((None, "green"), (1, "orange"))),
          "Unpriced messages in range",
          f"Billable messages the rate card has no price for (missing market or category): "
          f"they are not in the estimated cost. 0 means the card covers the traffic. {HOOK_NOTE}",
          [query(zero_if_none("sum(" + hooked(
              f"increase(whatsapp_webhook_unpriced_messages_total{{{HOOK}}}[$__range])") + ")"),
              "unpriced", instant=True)], width=12, height=6)
    b.add(over_time("percentunit").min(0), "Reconciliation ratio",
          "Webhook estimate over polled number for the current month "
          "(whatsapp_webhook_reconciliation_ratio), averaged over the selected channels per "
          "category. 1 means they agree; messages near 1 but cost away from 1 means the rate "
          "card is off; both low means deliveries are missing.",
          [query("avg by (measure, category) (" + hooked(
              f"whatsapp_webhook_reconciliation_ratio{{{HOOK}}}") + ")",
              "{{measure}} {{category}}")], width=12, height=8)
    b.add(merged_table({"client_id": "Client", "waba_id": "WABA", "channel_id": "Channel",
                        "category": "Category", "measure": "Measure", "Value": "Ratio"})
          .decimals(3)
          .thresholds(thresholds((None, "red"), (0.9, "orange"), (0.95, "green"),
                                 (1.05, "orange"), (1.1, "red"))),
          "Reconciliation per channel",
          "whatsapp_webhook_reconciliation_ratio per channel, category and measure, now. A "
          "channel's ratio appears at its second poll after its first webhook.",
          [query(hooked(f"whatsapp_webhook_reconciliation_ratio{{{HOOK}}}"), instant=True,
                 table_format=True)], width=12, height=8)
    return b.json()


# --- Voice calls -----------------------------------------------------------------------------


def voice_calls() -> dict[str, object]:
    b = Board("wue-voice-calls", "WhatsApp voice calls",
              "WhatsApp Business calls: how many, how long and what they cost, inbound "
              "(user-initiated) and outbound (business-initiated), polled from 360dialog with "
              "the webhook view beside it.", "now-7d", "5m")
    calls = f"whatsapp_calls_total{{{POLLED}}}"
    seconds = f"whatsapp_call_duration_seconds_total{{{POLLED}}}"
    cost = f"whatsapp_call_cost_total{{{POLLED}}}"
    compare = (" The second value is the previous range of the same length "
               "(offset $__range).")

    def now_and_before(expr: str, legend: str = "") -> list[prometheus_builder.Dataquery]:
        before = expr.replace("[$__range]", "[$__range] offset $__range")
        suffix = f" ({legend})" if legend else ""
        return [query(expr, "this range" + suffix, instant=True),
                query(before, "previous range" + suffix, instant=True)]

    b.row("Selected range vs the one before (polled)")
    b.add(big_number("short", 0), "Calls",
          f"Calls in the selected range, both directions. {POLLED_NOTE}{compare}",
          now_and_before(f"sum(increase({calls}[$__range]))"), width=6, height=6)
    b.add(big_number("m", 1), "Call minutes",
          f"Total call duration in the selected range. {POLLED_NOTE}{compare}",
          now_and_before(f"sum(increase({seconds}[$__range])) / 60"), width=6, height=6)
    no_calls = model.SpecialValueMap(options=model.DashboardSpecialValueMapOptions(
        match=model.SpecialValueMatch.NA_N, result=model.ValueMappingResult(text="no calls")))
    b.add(big_number("s", 0).mappings([no_calls]), "Average call duration",
          f"Call duration over calls in the selected range ('no calls' when there were none: "
          f"0/0). {POLLED_NOTE}{compare}",
          now_and_before(f"sum(increase({seconds}[$__range])) "
                         f"/ sum(increase({calls}[$__range]))"), width=6, height=6)
    b.add(big_number("short", 2), "Call cost",
          f"Call cost in the selected range per currency. {POLLED_NOTE}{compare} {MONEY_NOTE}",
          now_and_before(f"sum by (currency) (increase({cost}[$__range]))", "{{currency}}"),
          width=6, height=6)

    b.row("Over time (polled)")
    b.add(over_time("short", bars=True, stacked=True), "Calls: inbound vs outbound",
          f"Calls per interval by direction: user_initiated is inbound, business_initiated is "
          f"outbound. {POLLED_NOTE}",
          [query(f"sum by (direction) (increase({calls}[$__interval]))", "{{direction}}")],
          width=12, height=9)
    b.add(over_time("m", bars=True, stacked=True), "Call minutes by direction",
          f"Call duration per interval and direction, in minutes. {POLLED_NOTE}",
          [query(f"sum by (direction) (increase({seconds}[$__interval])) / 60",
                 "{{direction}}")], width=12, height=9)
    b.add(over_time("s"), "Average call duration",
          f"Call duration over calls per interval and direction (gaps where no call ended). "
          f"{POLLED_NOTE}",
          [query(f"sum by (direction) (increase({seconds}[$__interval])) "
                 f"/ (sum by (direction) (increase({calls}[$__interval])) > 0)",
                 "{{direction}}")], width=12, height=8)
    b.add(over_time("short", bars=True, stacked=True), "Call cost",
          f"Call cost per interval, direction and currency (user-initiated calls are free). "
          f"{POLLED_NOTE} {MONEY_NOTE}",
          [query(f"sum by (direction, currency) (increase({cost}[$__interval]))",
                 "{{direction}} ({{currency}})")], width=12, height=8)
    b.add(bars("short", 0), "Calls this month per client",
          f"Month-to-date calls per client and direction. {POLLED_NOTE} {MONTH_NOTE}",
          [query(f"sort_desc(sum by (client_id, direction) ({calls}))",
                 "{{client_id}} {{direction}}", instant=True)], width=12, height=8)
    b.add(bars("short", 2), "Call cost this month per client",
          f"Month-to-date call cost per client. {POLLED_NOTE} {MONTH_NOTE} {MONEY_NOTE}",
          [query(f"sort_desc(sum by (client_id, currency) ({cost}))",
                 "{{client_id}} ({{currency}})", instant=True)], width=12, height=8)

    b.row("Real-time (webhooks)")
    hook_calls = f"whatsapp_webhook_calls_total{{{HOOK}}}"
    hook_seconds = f"whatsapp_webhook_call_duration_seconds_total{{{HOOK}}}"
    hook_cost = f"whatsapp_webhook_call_estimated_cost_total{{{HOOK}}}"
    b.add(over_time("short", bars=True, stacked=True), "Calls ending, by direction and status",
          f"Calls seen ending (terminate events) per interval. {HOOK_NOTE}",
          [query("sum by (direction, status) ("
                 + hooked(f"increase({hook_calls}[$__interval])") + ")",
                 "{{direction}} {{status}}")], width=12, height=8)
    b.add(over_time("m", bars=True, stacked=True), "Call minutes (webhooks)",
          f"Duration of the calls seen ending per interval, in minutes. {HOOK_NOTE}",
          [query("sum by (direction) ("
                 + hooked(f"increase({hook_seconds}[$__interval])") + ") / 60",
                 "{{direction}}")], width=12, height=8)
    b.add(over_time("short"), "Call cost: webhook estimate vs polled",
          f"Call cost per interval: the rate card's estimate (6-second pulses, "
          f"business-initiated only) beside the polled cost. {HOOK_NOTE} {MONEY_NOTE}",
          [query("sum by (currency) (" + hooked(f"increase({hook_cost}[$__interval])") + ")",
                 "webhook estimate ({{currency}})"),
           query(f"sum by (currency) (increase({cost}[$__interval]))", "polled ({{currency}})")],
          width=12, height=8)
    b.add(big_number("short", 0), "Calls in range: webhook vs polled",
          f"Calls over the selected range seen in webhooks and polled. {HOOK_NOTE}",
          [query("sum(" + hooked(f"increase({hook_calls}[$__range])") + ")", "webhook",
                 instant=True),
           query(f"sum(increase({calls}[$__range]))", "polled", instant=True)],
          width=12, height=8)
    return b.json()


# --- Exporter health -------------------------------------------------------------------------


def exporter_health() -> dict[str, object]:
    b = Board("wue-exporter-health", "WhatsApp usage exporter health",
              "Is the exporter keeping up? Rate-limit budgets, planned poll intervals, API calls "
              "and errors, data age, discovery, and the webhook receiver and forwarder.",
              "now-24h", "1m")
    selected_wabas = f"and on (waba_id) whatsapp_channel_info{{{POLLED}}}"

    b.row("Budgets and polling")
    b.add(over_time("percentunit").min(0).max(1), "Budget use per WABA",
          "Share of each rate-limit budget used in its current window "
          "(whatsapp_exporter_budget_used_ratio); per-channel scopes show the busiest channel of "
          "the WABA. The planner aims just under 1; the ledger never lets a window overflow.",
          [query(f'max by (scope, waba_id) (whatsapp_exporter_budget_used_ratio'
                 f'{{waba_id=~"$waba", waba_id!=""}} {selected_wabas})',
                 "{{scope}} {{waba_id}}")], width=12, height=8)
    b.add(over_time("percentunit").min(0).max(1), "Partner-wide budget use",
          f"Share of the partner-wide budgets (client balance, partner balance, discovery) used "
          f"in their current window. {EXPORTER_NOTE}",
          [query('max by (scope) (whatsapp_exporter_budget_used_ratio{waba_id=""})',
                 "{{scope}}")], width=12, height=8)
    b.add(over_time("s"), "Planned poll interval per WABA",
          "Planned seconds between usage polls of the busiest channel of each selected WABA "
          "(whatsapp_exporter_poll_interval_seconds), from its binding budget.",
          [query(f'max by (waba_id) (whatsapp_exporter_poll_interval_seconds{{waba_id=~"$waba"}} '
                 f"{selected_wabas})", "{{waba_id}}")], width=12, height=8)
    b.add(over_time("short", bars=True, stacked=True), "Deferred polls",
          f"Polls the ledger held back because a budget was full, per interval and scope "
          f"(whatsapp_exporter_polls_deferred_total). {EXPORTER_NOTE}",
          [query(zero_if_none("sum by (scope) (increase("
                              "whatsapp_exporter_polls_deferred_total[$__interval]))", "scope"),
                 "{{scope}}")], width=12, height=8)

    b.row("Partner API")
    answering = model.ValueMap(options={
        "1": model.ValueMappingResult(text="answering", color="green", index=0),
        "0": model.ValueMappingResult(text="not answering", color="red", index=1)})
    b.add(big_number("none", 0).mappings([answering]), "Partner API",
          f"Whether the Partner API answers (whatsapp_exporter_api_reachable): after 3 calls in "
          f"a row without an HTTP answer it counts as down, and the exporter asks it one call "
          f"at a time, 5 s to 2 minutes apart, until it answers; the last good numbers are "
          f"served meanwhile. No data: this replica does not poll. {EXPORTER_NOTE}",
          [query("min(whatsapp_exporter_api_reachable)", "answering", instant=True)],
          width=4, height=6)
    b.add(big_number("short", 0).thresholds(thresholds((None, "green"), (1, "red"))),
          "429 answers in range",
          f"HTTP 429 answers from the Partner API in the selected range "
          f"(whatsapp_exporter_rate_limited_total). Each one is a planning bug: expect 0. "
          f"{EXPORTER_NOTE}",
          [query(zero_if_none("sum(increase(whatsapp_exporter_rate_limited_total[$__range]))"),
                 "429s", instant=True)], width=5, height=6)
    b.add(big_number("short", 0).thresholds(thresholds((None, "green"), (1, "orange"))),
          "API errors in range",
          f"Failed Partner API calls in the selected range, all kinds "
          f"(whatsapp_exporter_api_errors_total). {EXPORTER_NOTE}",
          [query(zero_if_none("sum(increase(whatsapp_exporter_api_errors_total[$__range]))"),
                 "errors", instant=True)], width=5, height=6)
    b.add(big_number("reqps", 2), "API request rate",
          f"Partner API requests per second, averaged over the selected range. {EXPORTER_NOTE}",
          [query("sum(rate(whatsapp_exporter_api_requests_total[$__range]))", "requests/s",
                 instant=True)], width=5, height=6)
    b.add(big_number("s", 0), "Since last discovery",
          f"Time since discovery last completed "
          f"(whatsapp_exporter_last_discovery_success_timestamp_seconds). {EXPORTER_NOTE}",
          [query("time() - max(whatsapp_exporter_last_discovery_success_timestamp_seconds)",
                 "age", instant=True)], width=5, height=6)
    b.add(over_time("reqps", stacked=True), "API requests by endpoint and status",
          f"Partner API requests per second by endpoint and HTTP status (code 'transport' when "
          f"no answer came). {EXPORTER_NOTE}",
          [query("sum by (endpoint, code) "
                 "(rate(whatsapp_exporter_api_requests_total[$__rate_interval]))",
                 "{{endpoint}} {{code}}")], width=12, height=8)
    b.add(over_time("short", bars=True, stacked=True), "API errors by kind, and 429s",
          f"Failed calls per interval by kind (transport, rate_limited, server, auth, client, "
          f"malformed) and 429 answers by endpoint. {EXPORTER_NOTE}",
          [query(zero_if_none("sum by (kind) "
                              "(increase(whatsapp_exporter_api_errors_total[$__interval]))",
                              "kind"), "{{kind}}"),
           query(zero_if_none("sum by (endpoint) "
                              "(increase(whatsapp_exporter_rate_limited_total[$__interval]))",
                              "endpoint"), "429 {{endpoint}}")], width=12, height=8)
    b.add(over_time("s"), "API request duration (p95)",
          f"95th percentile of Partner API request duration per endpoint "
          f"(whatsapp_exporter_api_request_duration_seconds). {EXPORTER_NOTE}",
          [query("histogram_quantile(0.95, sum by (le, endpoint) (rate("
                 "whatsapp_exporter_api_request_duration_seconds_bucket[$__rate_interval])))",
                 "{{endpoint}}")], width=12, height=8)
    b.add(bars("short", 0), "Discovered",
          f"What this replica polls after discovery, filters and sharding "
          f"(whatsapp_exporter_discovered). {EXPORTER_NOTE}",
          [query("max by (kind) (whatsapp_exporter_discovered)", "{{kind}}", instant=True)],
          width=12, height=8)

    b.row("Data age")
    age = f"time() - whatsapp_usage_updated_timestamp_seconds{{{POLLED}}}"
    b.add(over_time("s"), "Data age per channel",
          "Seconds since each selected channel's usage was last fetched "
          "(time() - whatsapp_usage_updated_timestamp_seconds): a saw-tooth whose peaks are the "
          "poll interval. The polled numbers are this old.",
          [query(f"max by (channel_id) ({age})", "{{channel_id}}")], width=16, height=9)
    b.add(bars("s", 0).thresholds(thresholds((None, "green"), (3600, "orange"), (7200, "red"))),
          "Stalest channels",
          "The ten selected channels whose usage was fetched longest ago.",
          [query(f"topk(10, max by (waba_id, channel_id) ({age}))", "{{channel_id}}",
                 instant=True)], width=8, height=9)

    b.row("Webhooks")
    b.add(over_time("short", bars=True, stacked=True), "Webhook deliveries by result",
          f"Deliveries to the receiver per interval by result (ok, duplicate, unauthorized, "
          f"malformed, too_large, unsupported_media_type, error). {EXPORTER_NOTE}",
          [query("sum by (result) "
                 "(increase(whatsapp_exporter_webhook_requests_total[$__interval]))",
                 "{{result}}")], width=12, height=8)
    b.add(big_number("short", 0).thresholds(thresholds((None, "green"), (1, "orange"))),
          "Rejected deliveries in range",
          f"Deliveries answered with a 4xx or an error in the selected range (anything but ok "
          f"and duplicate): wrong secrets, malformed or oversized bodies. {EXPORTER_NOTE}",
          [query(zero_if_none('sum(increase(whatsapp_exporter_webhook_requests_total'
                              '{result!~"ok|duplicate"}[$__range]))'), "rejected",
                 instant=True)], width=6, height=8)
    b.add(big_number("short", 0), "Inbox pending",
          f"Deliveries recorded but not yet counted (whatsapp_exporter_webhook_inbox_pending); "
          f"should stay near 0. {EXPORTER_NOTE}",
          [query("sum(whatsapp_exporter_webhook_inbox_pending)", "pending", instant=True)],
          width=6, height=8)
    b.add(over_time("short"), "Forward outbox",
          f"Bodies waiting to be forwarded to the application "
          f"(whatsapp_exporter_webhook_outbox_pending). {EXPORTER_NOTE}",
          [query("sum(whatsapp_exporter_webhook_outbox_pending)", "pending")],
          width=8, height=8)
    b.add(over_time("s"), "Oldest waiting body",
          f"Age of the oldest body waiting to be forwarded (0 when none waits; "
          f"whatsapp_exporter_webhook_outbox_oldest_age_seconds). {EXPORTER_NOTE}",
          [query("max(whatsapp_exporter_webhook_outbox_oldest_age_seconds)", "oldest")],
          width=8, height=8)
    b.add(over_time("short", bars=True, stacked=True), "Forward results",
          f"Forwarding attempts per interval by result: delivered, failed (to be retried), "
          f"expired (dropped after the maximum age). {EXPORTER_NOTE}",
          [query(zero_if_none("sum by (result) "
                              "(increase(whatsapp_exporter_webhook_forwards_total[$__interval]))",
                              "result"), "{{result}}")], width=8, height=8)
    b.add(over_time("s"), "Forward lag",
          f"From receipt to delivery at the application, median and 95th percentile "
          f"(whatsapp_exporter_webhook_forward_lag_seconds); no data when forwarding is off or "
          f"nothing was forwarded. {EXPORTER_NOTE}",
          [query("histogram_quantile(0.5, sum by (le) (rate("
                 "whatsapp_exporter_webhook_forward_lag_seconds_bucket[$__rate_interval])))",
                 "p50"),
           query("histogram_quantile(0.95, sum by (le) (rate("
                 "whatsapp_exporter_webhook_forward_lag_seconds_bucket[$__rate_interval])))",
                 "p95")], width=12, height=8)
    b.add(big_number("short", 0).thresholds(thresholds((None, "green"), (1, "red"))),
          "Expired forwards in range",
          f"Bodies dropped because the application did not take them within the maximum age. "
          f"{EXPORTER_NOTE}",
          [query(zero_if_none('sum(increase(whatsapp_exporter_webhook_forwards_total'
                              '{result="expired"}[$__range]))'), "expired", instant=True)],
          width=12, height=8)
    return b.json()


BUILDERS: dict[str, Callable[[], dict[str, object]]] = {
    "usage-costs.json": usage_costs,
    "voice-calls.json": voice_calls,
    "exporter-health.json": exporter_health,
}


def dashboards() -> dict[str, dict[str, object]]:
    """File name -> dashboard JSON model, as written."""
    return {name: build() for name, build in BUILDERS.items()}


def render(dashboard: dict[str, object]) -> str:
    """Stable text: sorted keys, 2-space indent, a trailing newline."""
    return json.dumps(dashboard, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def outputs() -> dict[Path, str]:
    """Every file the generator owns -> the text it should hold."""
    texts = {name: render(d) for name, d in dashboards().items()}
    return {directory / name: text for directory in OUTPUT_DIRS for name, text in texts.items()}


def stale() -> list[Path]:
    return [path for path, text in outputs().items()
            if not path.is_file() or path.read_text(encoding="utf-8") != text]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 listing the files that are out of date")
    args = parser.parse_args(argv)
    if args.check:
        out_of_date = stale()
        for path in out_of_date:
            print(f"stale: {path.relative_to(ROOT)} (run: python grafana/build.py)")
        return 1 if out_of_date else 0
    for path, text in outputs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
