"""Subcommands of the ``taskonomy`` console script, one module each."""
