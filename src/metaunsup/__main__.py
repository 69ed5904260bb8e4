"""``python -m metaunsup``: the command line (also what ``torchrun -m metaunsup`` runs)."""

import sys

from metaunsup.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
