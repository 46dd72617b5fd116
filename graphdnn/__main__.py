"""``python -m graphdnn`` runs the ``graphdnn`` command."""

import sys

from graphdnn.cli import main

if __name__ == "__main__":
    sys.exit(main())
