"""``python -m server``: the same command as ``ndpca serve``, without loading the other commands."""

import sys

from ndpca.cli import main

if __name__ == "__main__":
    sys.exit(main(modules=("server.cli",), prog="python -m server"))
