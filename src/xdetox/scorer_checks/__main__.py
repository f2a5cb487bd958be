"""``python -m xdetox.scorer_checks build [--out DIR]``: rewrite the shipped suite from its templates."""

import sys

from xdetox.scorer_checks.suite import main

sys.exit(main())
