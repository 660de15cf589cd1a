"""Operations: what the people who run the service watch.

Prometheus metrics and the audit trail (:mod:`.telemetry`), the data profile and drift
reports (:mod:`.profile`, :mod:`.drift`), and server logging with request ids
(:mod:`.logging_context`).
"""
