import sys

from ndpca.cli import main

sys.exit(main())
