"""Spend budgets: the monthly amounts a partner means each client or WABA to spend, exposed so
that recording rules and alerts can compare them with the month-to-date cost and its forecast."""
