import sys

from phasekit.cli import main

sys.exit(main())
