import sys

from agent.demo.main import main

sys.exit(main())
