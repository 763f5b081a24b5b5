"""python -m bridge == novofon-bridge."""

import sys

from bridge.cli.main import main

sys.exit(main(sys.argv[1:]))
