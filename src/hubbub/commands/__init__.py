"""Subcommands of the ``hubbub`` command line that act as clients of a running server."""
