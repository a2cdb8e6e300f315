"""Entry: ``python -m guest.initdata`` (see :mod:`guest.initdata.cli`)."""

import sys

from guest.initdata.cli import main

sys.exit(main())
