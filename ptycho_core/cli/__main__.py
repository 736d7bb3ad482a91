"""``python -m ptycho_core.cli``: the same as the ``ptycho`` console script."""

import sys

from ptycho_core.cli.main import main

sys.exit(main())
