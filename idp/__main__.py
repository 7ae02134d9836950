"""``python -m idp``: the same as the ``idp`` command."""

import sys

from idp.cli import main

sys.exit(main())
