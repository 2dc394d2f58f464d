"""whatsapp-usage-exporter: WhatsApp Business usage and cost from 360dialog, for Prometheus."""

__version__ = "0.1.0"
