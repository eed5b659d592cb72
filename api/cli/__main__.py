"""Lets `python -m api.cli` run the `lcp` command (how `lcp dev` starts its children)."""

from api.cli import app

app()
