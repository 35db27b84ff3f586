"""``python -m hubbub`` runs the command line."""

import sys

from hubbub.cli import main

sys.exit(main())
