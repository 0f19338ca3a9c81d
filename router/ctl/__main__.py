"""``python -m router.ctl``: routerctl."""

import sys

from router.ctl import main

sys.exit(main())
