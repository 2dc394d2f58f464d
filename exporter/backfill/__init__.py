"""History from before the exporter started: fetched within the budgets, kept in the state
file, written as OpenMetrics."""
