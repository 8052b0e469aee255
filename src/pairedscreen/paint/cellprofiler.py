"""Read CellProfiler ExportToSpreadsheet output (Image.csv + one CSV per compartment) into one per-cell table
with pycytominer/CytoTable naming: ``{Compartment}_{Module}_{Feature}...`` features and ``Metadata_*``.

Compartments are joined on the Cytoplasm object's ``Parent_Cells`` / ``Parent_Nuclei`` within an image
(the CellProfiler/JUMP convention); image metadata (``Metadata_Plate``, ``Metadata_Well``, ``Metadata_Site``)
comes from Image.csv by ``ImageNumber``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from pairedscreen import columns as C

_KEYS = ("ImageNumber", "ObjectNumber")
_LINKS = ("Parent_", "Children_", "Number_Object_Number")


def _prefixed(df: pd.DataFrame, compartment: str, extra: dict[str, pd.Series]) -> pd.DataFrame:
    keep = [c for c in df.columns if c not in _KEYS and not c.startswith(_LINKS)]
    head = pd.DataFrame({"ImageNumber": df["ImageNumber"].to_numpy(),
                         **{k: v.to_numpy() for k, v in extra.items()}})
    return pd.concat([head, df[keep].add_prefix(f"{compartment}_")], axis=1)


def read_cellprofiler_csvs(folder: str | os.PathLike,
                           image_metadata: tuple[str, ...] = (C.PLATE, C.WELL, C.SITE)) -> pd.DataFrame:
    """One row per Cytoplasm object with its Cells and Nuclei measurements and image metadata."""
    d = Path(folder)
    cyto = pd.read_csv(d / "Cytoplasm.csv")
    cells = pd.read_csv(d / "Cells.csv")
    nuclei = pd.read_csv(d / "Nuclei.csv")
    image = pd.read_csv(d / "Image.csv", usecols=lambda c: c == "ImageNumber" or c in image_metadata)
    out = _prefixed(cyto, "Cytoplasm", {C.OBJECT_NUMBER: cyto["ObjectNumber"],
                                        "_cells": cyto["Parent_Cells"], "_nuclei": cyto["Parent_Nuclei"]})
    c = _prefixed(cells, "Cells", {"_cells": cells["ObjectNumber"]})
    n = _prefixed(nuclei, "Nuclei", {"_nuclei": nuclei["ObjectNumber"]})
    out = out.merge(c, on=["ImageNumber", "_cells"], how="inner")
    out = out.merge(n, on=["ImageNumber", "_nuclei"], how="inner")
    out = image.merge(out, on="ImageNumber", how="right")
    return out.drop(columns=["_cells", "_nuclei"]).copy()  # copy() consolidates the merged blocks
