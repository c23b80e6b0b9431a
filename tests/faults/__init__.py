"""Fault tests with real services: a private PostgreSQL cluster and a private Azurite that the
tests may stop, kill and restart, a runner in a subprocess that they may kill, and a soak."""
