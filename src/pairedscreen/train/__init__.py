"""Training export (``results/train/``) and held-out evals (``results/quality/evals.json``).

Modules: :mod:`~pairedscreen.train.splits` (one set of perturbation splits + a batch holdout for both arms),
:mod:`~pairedscreen.train.rna_export` (cell-load h5ad + TOML), :mod:`~pairedscreen.train.crops` (per-cell
crops zarr), :mod:`~pairedscreen.train.croissant` (Croissant JSON-LD), :mod:`~pairedscreen.train.evals`
(ridge cross-modal prediction) and :mod:`~pairedscreen.train.celleval_run` (cell-eval baselines, run in the
separate ``.venv-eval`` environment: it imports nothing but numpy, pandas, anndata and cell-eval).

This ``__init__`` imports nothing, so the eval environment can import the subpackage.
"""
