"""whatsapp-usage-exporter: WhatsApp Business usage and cost from 360dialog, for Prometheus."""

# The one place the version is written: pyproject.toml reads it, and tests/unit/test_version.py
# holds the Dockerfile and the chart to it.
__version__ = "0.1.0"
