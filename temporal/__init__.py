"""Temporal plumbing: client factory, task queues and search attributes, the dev-server launcher."""
