"""``hubbub admin-hash``: the hash of an admin password, or a new admin token and its hash.

The password is read from standard input when it is not a terminal (one line), or asked for
twice without echo. Prints the line to put in the ``[admin]`` section::

    password_hash = "scrypt$32768$8$1$..."

With ``--new-token``, makes a random admin token instead and prints it (give it to whoever
needs it, once: it is not stored) followed by its ``token_hash = "sha256$..."`` line.
"""

from __future__ import annotations

import argparse
import getpass
import sys

from hubbub.admin.passwords import hash_password, new_token
from hubbub.commands.common import UsageError, describe

MIN_PASSWORD = 12


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser(
        "admin-hash",
        help="hash an admin password, or make an admin token ([admin] section)",
        description=describe(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--new-token", action="store_true", help="make a random admin token and its hash"
    )


def _read_password() -> str:
    if not sys.stdin.isatty():
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("admin password: ")
    if getpass.getpass("again: ") != first:
        raise UsageError("the two passwords differ")
    return first


def run(args: argparse.Namespace) -> int:
    """Print the hash line (or the token and its hash line); 0, or raises UsageError."""
    if args.new_token:
        token, hashed = new_token()
        print(token)
        print(f'token_hash = "{hashed}"')
        return 0
    password = _read_password()
    if len(password) < MIN_PASSWORD:
        raise UsageError(f"the password is shorter than {MIN_PASSWORD} characters")
    print(f'password_hash = "{hash_password(password)}"')
    return 0
