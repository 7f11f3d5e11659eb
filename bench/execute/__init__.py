"""Executing jobs: protocol.py (typed messages), process.py (one spawn path, limits, group kill),
local.py (groups of cells and quality jobs on this machine), worker.py (the child process), rss.py."""
