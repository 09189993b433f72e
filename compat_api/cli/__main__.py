"""`python -m compat_api.cli`: the `flowtime` command."""

import sys

from compat_api.cli.main import main

sys.exit(main())
