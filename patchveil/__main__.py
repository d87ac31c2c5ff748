"""`python -m patchveil` is the `patchveil` command."""

import sys

from patchveil.cli import main

sys.exit(main())
