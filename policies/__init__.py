"""Pure decision code (standard library only) and the default policy files, as YAML."""
