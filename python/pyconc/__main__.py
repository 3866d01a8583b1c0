"""``python -m pyconc``: the command line lives in :mod:`pyconc.tools.cli`."""

import sys

from .tools.cli import main

if __name__ == "__main__":
    sys.exit(main())
