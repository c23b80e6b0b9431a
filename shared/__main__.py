"""``python -m shared``: the pipeline's command line (see ``shared/cli.py``)."""

import sys

from shared.cli import main

sys.exit(main())
