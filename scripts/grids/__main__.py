"""``python -m scripts.grids <grid> [overrides...]``: run one of :mod:`scripts.grids.catalog`'s grids."""

import sys

from scripts.grids.catalog import main

sys.exit(main())
