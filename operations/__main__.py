"""`python -m operations COMMAND`: the same as the `churnops` command (operations/cli.py)."""

import sys

from operations.cli import main

sys.exit(main())
