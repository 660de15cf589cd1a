"""Serving phase: the served model's configuration, the pyfunc service, registration, the web UI."""
