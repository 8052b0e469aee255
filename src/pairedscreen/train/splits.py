"""One set of held-out splits for both arms (``results/train/splits.tsv``, ``batch_holdout.tsv``).

Every non-control perturbation is assigned ``train``/``val``/``test`` exactly once: perturbations are ranked
by a seeded SHA-256 of their id (so the assignment does not depend on registry row order and stays mostly
put when perturbations are added), the first ``round(test_fraction * n)`` are ``test``, the next
``round(val_fraction * n)`` are ``val`` (at least one of each when there are 3 or more perturbations), the
rest ``train``. Controls are ``all`` in ``splits.tsv``: they are in every split; at cell level each control
cell is given a split by the same seeded hash of its cell id (so every split has its own control cells).

The batch holdout holds out whole libraries and plates of one batch (``train.batch_holdout``: a batch id,
``auto`` = the last batch in sorted order when the screen has two or more, or ``none``): at cell level
``batch_split`` is ``test`` for cells of a held-out library/plate and ``train`` otherwise.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pairedscreen.errors import InputError

SPLITS = ("train", "val", "test")
CONTROL_SPLIT = "all"
SPLIT_COLUMNS = ("split", "batch_split")
PathLike = str | os.PathLike


def seeded_uniform(keys: Iterable[str], seed: int) -> np.ndarray:
    """A deterministic number in [0, 1) per key: SHA-256 of ``"{seed}:{key}"``."""
    out = [int.from_bytes(hashlib.sha256(f"{seed}:{k}".encode()).digest()[:8], "big") / 2.0**64
           for k in keys]
    return np.asarray(out, dtype=np.float64)


def split_counts(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    """(n_val, n_test) for ``n`` non-control perturbations."""
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise InputError(f"train.val_fraction ({val_fraction}) and train.test_fraction ({test_fraction}) "
                         "must be >= 0 and sum to less than 1. Fix: lower them in config.yaml")
    n_test, n_val = round(test_fraction * n), round(val_fraction * n)
    if n >= 3:
        n_test, n_val = max(1, n_test) if test_fraction > 0 else 0, max(1, n_val) if val_fraction > 0 else 0
    while n_test + n_val >= n and n_val > 0:
        n_val -= 1
    return n_val, n_test


def assign_splits(registry: pd.DataFrame, *, seed: int, val_fraction: float,
                  test_fraction: float) -> pd.DataFrame:
    """``splits.tsv``: perturbation_id, target_gene, is_control, split (train|val|test|all), rank (the
    seeded order), seed. Registry order."""
    reg = registry.reset_index(drop=True)
    ids = reg["perturbation_id"].astype(str)
    is_ctrl = reg["is_control"].astype(bool).to_numpy()
    u = seeded_uniform(ids, seed)
    trt = np.flatnonzero(~is_ctrl)
    order = trt[np.lexsort((ids.to_numpy()[trt], u[trt]))]
    n_val, n_test = split_counts(len(trt), val_fraction, test_fraction)
    split = np.full(len(reg), CONTROL_SPLIT, dtype=object)
    rank = np.full(len(reg), -1, dtype=np.int64)
    split[order] = "train"
    split[order[:n_test]] = "test"
    split[order[n_test:n_test + n_val]] = "val"
    rank[order] = np.arange(len(order))
    return pd.DataFrame({"perturbation_id": ids.to_numpy(),
                         "target_gene": (reg["target_gene"].astype(str).to_numpy() if "target_gene" in reg
                                         else ""),
                         "is_control": is_ctrl, "split": split, "rank": rank, "seed": int(seed)})


def held_out_batch(batches: Iterable[str], setting: str) -> str | None:
    """The batch held out for ``train.batch_holdout`` (``auto``: the last in sorted order when there are two
    or more batches; ``none``: none)."""
    found = sorted({str(b) for b in batches})
    if setting == "none":
        return None
    if setting == "auto":
        return found[-1] if len(found) >= 2 else None
    if setting not in found:
        raise InputError(f"train.batch_holdout {setting!r} is not a batch of the screen (batches: {found}). "
                         "Fix: set it to one of them, 'auto' or 'none'")
    return setting


def batch_holdout(libraries: pd.DataFrame, plates: pd.DataFrame, setting: str) -> pd.DataFrame:
    """``batch_holdout.tsv``: arm (rna|paint), unit (library or plate id), batch, batch_split (train|test)."""
    rows = [("rna", str(r.library_id), str(r.batch)) for r in libraries.itertuples()]
    rows += [("paint", str(r.plate_id), str(r.batch)) for r in plates.itertuples()]
    table = pd.DataFrame(rows, columns=["arm", "unit", "batch"])
    held = held_out_batch(table["batch"], setting)
    table["batch_split"] = np.where(table["batch"] == held, "test", "train")
    return table


def cell_splits(perturbation_ids: Sequence[str], cell_ids: Sequence[str], units: Sequence[str],
                splits: pd.DataFrame, holdout: pd.DataFrame, arm: str, *, val_fraction: float,
                test_fraction: float) -> pd.DataFrame:
    """Per-cell ``split`` (the perturbation's; for control cells a seeded per-cell draw with the configured
    fractions) and ``batch_split`` (of the cell's library/plate). Cells of perturbations outside
    ``splits`` are an error (the registry is the join key of everything)."""
    table = splits.set_index("perturbation_id")
    pert = pd.Series(np.asarray(perturbation_ids, dtype=str))
    unknown = sorted(set(pert) - set(table.index))
    if unknown:
        raise InputError(f"cells of perturbations {unknown[:10]} are not in splits.tsv. Fix: rerun the "
                         "train_splits rule after editing the registry")
    split = table["split"].reindex(pert).to_numpy(dtype=object, copy=True)
    ctrl = split == CONTROL_SPLIT
    if ctrl.any():
        seed = int(table["seed"].iloc[0])
        u = seeded_uniform(np.asarray(cell_ids, dtype=str)[ctrl], seed)
        split[ctrl] = np.where(u < test_fraction, "test", np.where(u < test_fraction + val_fraction, "val",
                                                                  "train"))
    units_map = holdout[holdout["arm"] == arm].set_index("unit")["batch_split"]
    bsplit = pd.Series(np.asarray(units, dtype=str)).map(units_map).fillna("train").to_numpy(dtype=object)
    return pd.DataFrame({"split": split.astype(str), "batch_split": bsplit.astype(str)})


def summarize(splits: pd.DataFrame, holdout: pd.DataFrame, params: Mapping[str, Any]) -> dict[str, Any]:
    """The datasheet's ``train.splits`` block."""
    trt = splits[~splits["is_control"].astype(bool)]
    lists = {s: trt.loc[trt["split"] == s, "perturbation_id"].astype(str).tolist() for s in SPLITS}
    held = sorted(set(holdout.loc[holdout["batch_split"] == "test", "batch"]))
    return {"seed": int(params["seed"]), "val_fraction": float(params["val_fraction"]),
            "test_fraction": float(params["test_fraction"]),
            "n": {s: len(v) for s, v in lists.items()}, "perturbations": lists,
            "controls": splits.loc[splits["is_control"].astype(bool), "perturbation_id"].astype(str).tolist(),
            "batch_holdout": {"setting": str(params["batch_holdout"]), "held_out_batches": held,
                              "units": holdout.loc[holdout["batch_split"] == "test", "unit"].tolist()}}
