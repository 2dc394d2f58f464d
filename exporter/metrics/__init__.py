"""Exposition: text rendering primitives, the cached and compressed `/metrics` body, the HTTP app
that serves it, and the exporter's metrics about its own work."""
