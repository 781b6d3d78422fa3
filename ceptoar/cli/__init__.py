"""The `ceptoar` command line."""
