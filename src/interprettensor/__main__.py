"""``python -m interprettensor``: the same as the ``interprettensor`` command."""

import sys

from .apps.cli import main

sys.exit(main())
