"""The HTTP API (FastAPI, one router per resource) and the `lcp` command line."""
