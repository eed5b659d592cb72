"""Worker entry points: which workflows and activities run on which task queue, and shutdown."""
