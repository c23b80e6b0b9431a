"""``python -m shared``: the pipeline's command line (see ``shared/cli.py``)."""

import sys

from shared.tools.cli import main

sys.exit(main())
