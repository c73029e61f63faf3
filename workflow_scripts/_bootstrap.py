"""Make the repository's library importable in a script job, installed or not (e.g. --sdm conda)."""

import sys
from pathlib import Path

_root = str(Path(__file__).resolve().parent.parent)
if _root not in sys.path:
    sys.path.insert(0, _root)
