"""``python -m lanthorn``: the same as the ``lanthorn`` command."""

import sys

from .cli import main

sys.exit(main())
