"""Config helpers used by the workflow: resolving resources that may live in the workflow's repository."""

from __future__ import annotations

from pathlib import Path

CELLPOSE_MODEL_NAMES = {"cyto", "cyto2", "cyto3", "nuclei", "tissuenet_cp3", "livecell_cp3", "yeast_PhC_cp3",
                        "yeast_BF_cp3", "bact_phase_cp3", "bact_fluor_cp3", "deepbacs_cp3", "cyto2_cp3"}


def resolve_model(value: str, workdir: str | Path, basedir: str | Path) -> str:
    """A Cellpose model name stays a name; a path is made absolute (working directory first, then the
    workflow's repository, where the shipped demo models live)."""
    if value in CELLPOSE_MODEL_NAMES:
        return value
    p = Path(value)
    if p.is_absolute():
        candidates = [p]
    else:
        candidates = [Path(workdir) / p, Path(basedir) / p]
    for c in candidates:
        if c.exists():
            return str(c.resolve())
    names = ", ".join(sorted(CELLPOSE_MODEL_NAMES))
    raise FileNotFoundError(
        f"segmentation model {value!r} is neither a Cellpose model name ({names}) "
        f"nor an existing file (looked in {', '.join(str(c) for c in candidates)}). Fix: set "
        "paint.segmentation.*.model to a model name (downloaded by Cellpose, or read from "
        "CELLPOSE_LOCAL_MODELS_PATH offline) or to a model file"
    )


def estimated_cells(expected_cells: int, n_wells: int, cells_per_well: int = 500) -> int:
    """Rough screen size used to decide ``pair.cells_h5mu: auto`` at planning time."""
    return int(expected_cells) + int(n_wells) * cells_per_well
