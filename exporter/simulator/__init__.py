"""A simulated 360dialog Partner API for demo mode and tests.

It never imports `exporter.api`: the client and the simulator each read the reference on their
own, so they cannot share a misreading of the API.
"""
