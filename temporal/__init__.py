"""Temporal plumbing: client factory, task queues and search attributes, visibility queries, lcp's errors
as Temporal failures, the dev-server launcher."""
