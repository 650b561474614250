"""``python -m healer.holder --dir DIR``: the holder process (see server.py)."""

import sys

from healer.holder.server import main

sys.exit(main())
