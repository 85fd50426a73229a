"""Alerts: the outbox, the delivery worker and one sender per kind of destination."""
