"""``python -m edge_client``: the same command as ``ndpca edge``, without loading the other commands."""

import sys

from ndpca.cli import main

if __name__ == "__main__":
    sys.exit(main(modules=("edge_client.cli",), prog="python -m edge_client"))
