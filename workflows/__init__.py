"""Durable workflows (deterministic code): one module per workflow, its input and result beside it."""
