"""``python -m zembed.indexer ...`` is ``zembed index ...``."""

import sys

from zembed.indexer.cli import main

sys.exit(main())
