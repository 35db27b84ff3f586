"""hubbub: real-time messaging for Python."""

__version__ = "0.1.0"
