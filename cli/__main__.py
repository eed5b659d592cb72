"""Lets `python -m cli` run the `lcp` command (how `lcp dev` starts its children)."""

from cli import app

app()
