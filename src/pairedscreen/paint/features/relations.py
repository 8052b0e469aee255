"""Object numbers and parent/child relations, as CellProfiler's object modules record them.

- ``Number_Object_Number``: the object's label (every Identify module).
- ``Children_Cytoplasm_Count``: IdentifyTertiaryObjects makes the cytoplasm of cell ``k`` from
  cell ``k`` minus nucleus ``k`` and records it as a child of both; the count is the number of
  cytoplasm objects with that parent: 1 when cytoplasm ``k`` has pixels, else 0.
- ``Parent_NucleiIncludingEdges``: JUMP measures ``Nuclei`` made by FilterObjects from
  ``NucleiIncludingEdges``; the parent is the unfiltered object's label. pairedscreen's
  segmentation keeps the objects touching the image border, so the unfiltered and measured sets are
  the same objects and the parent is the nucleus' own label.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CHILD", "PARENTS", "measure_relations"]

CHILD = "Cytoplasm"  # the tertiary objects, children of Cells and Nuclei
PARENTS = ("Cells", "Nuclei")
INCLUDING_EDGES = {"Nuclei": "NucleiIncludingEdges"}


def measure_relations(compartment: str, labels_present: np.ndarray,
                      child_labels_present: np.ndarray | None) -> dict[str, np.ndarray]:
    """Relation columns of one compartment's objects (``labels_present`` ascending): the object's
    number, for Cells and Nuclei the count of their cytoplasm child (``child_labels_present``: the
    cytoplasm labels with pixels), for Nuclei the parent in the border-inclusive set."""
    ids = np.asarray(labels_present, dtype=np.int64)
    out: dict[str, np.ndarray] = {"Number_Object_Number": ids.astype(np.float64)}
    if compartment in PARENTS and child_labels_present is not None:
        out[f"Children_{CHILD}_Count"] = np.isin(ids, child_labels_present).astype(np.float64)
    if compartment in INCLUDING_EDGES:
        out[f"Parent_{INCLUDING_EDGES[compartment]}"] = ids.astype(np.float64)
    return out
