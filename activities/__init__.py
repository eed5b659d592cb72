"""Side effects, grouped by the system they touch; classes built once per worker with clients injected."""
