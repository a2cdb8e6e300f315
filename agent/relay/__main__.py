import sys

from agent.relay.main import main

sys.exit(main())
