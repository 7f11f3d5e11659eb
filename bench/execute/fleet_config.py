"""What the fleet's coordinator, its hosts and the command line agree on; importable without Dask installed."""

from __future__ import annotations

# Loopback: the scheduler runs code on every worker for whoever reaches it, so another machine is a
# deliberate choice (README, Many machines: TLS for real networks).
DEFAULT_SCHEDULER = "tcp://127.0.0.1:8786"
RESOURCE = "bench-host"  # each worker has one: a measuring group takes it, so groups never overlap on a host
CONNECT_TIMEOUT_S = 10.0
