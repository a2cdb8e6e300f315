import sys

from guest.imagepull.cli import main

sys.exit(main())
