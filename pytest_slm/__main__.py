"""`python -m pytest_slm`: the commands beside the plugin that are not a test run (see cli/)."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
