"""`python -m controller.cli ...`, as the `embrel` script."""

import sys

from controller.cli.app import main

sys.exit(main())
