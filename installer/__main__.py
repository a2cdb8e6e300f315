"""``python -m installer``."""

from installer.cli import main

raise SystemExit(main())
