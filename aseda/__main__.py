"""``python -m aseda``: the same as the ``aseda`` command."""

import sys

from ._cli import main

sys.exit(main())
