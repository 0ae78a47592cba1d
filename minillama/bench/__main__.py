"""``python -m minillama.bench <benchmark>``."""

import sys

from . import main

sys.exit(main())
