"""`python -m mailbot.cli …`, as the tests and the demo call it."""

import sys

from mailbot.cli.main import main

sys.exit(main())
