import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Tests are about behaviour, and the machines have 2 cores: keep torch from oversubscribing them.
os.environ.setdefault("OMP_NUM_THREADS", "1")
