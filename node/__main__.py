"""``python -m node`` is ``medianode``."""

import sys

from node.cli import main

sys.exit(main())
