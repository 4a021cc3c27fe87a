"""Helpers for tests, benchmarks and the demo: small released-layout checkpoints and child processes.

Not used by the node or the CLI at run time."""
