"""Make the repository's library importable in a script job, installed or not (e.g. --sdm conda).

The repository's own library goes first on sys.path, ahead of an installed smalldl: an editable install
of another checkout (or an older release in the environment) must never stand in for this workflow's
code. Snakemake's script preamble lists the workflow folder after site-packages, so a plain "add it if
missing" would leave the installed copy first."""

import sys
from pathlib import Path

_root = str(Path(__file__).resolve().parent.parent)
if sys.path[:1] != [_root]:
    sys.path.insert(0, _root)
