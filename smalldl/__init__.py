"""smalldl: training deep-learning models with small datasets (Romero et al. 2021) as a library.

The Snakemake workflow in this repository calls into this package; nothing here imports Snakemake.
"""

__version__ = "0.1.0"
