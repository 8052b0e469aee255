"""Per-object CellProfiler-style features of one imaging site.

``measure_site`` measures every feature family on the three compartments (Nuclei, Cells,
Cytoplasm) of a site and returns one row per object id. Object id ``k`` is the same cell in all
three label images; a cell without a nucleus gets NaN in every ``Nuclei_*`` column. Columns are
``{Compartment}_{Family}_{Feature}[_{Channel}[_{Scale}]]`` as CellProfiler names them, e.g.
``Nuclei_Intensity_MeanIntensity_DNA``, ``Cells_AreaShape_Area``,
``Cells_Texture_Contrast_ER_3_00_256``.

Each compartment's label image is scanned once (:func:`objects.build_index`); every family reuses
that index. Family modules are imported on first use, so importing this package compiles nothing.
Parameters follow ``config.yaml``'s ``paint.features`` keys. Colocalisation measures each channel pair
once, first channel first in :func:`colocalization.channel_pairs` order (sorted names: the JUMP
pipeline's ``Correlation_Correlation_AGP_DNA``, ...); the Costes thresholds (``colocalization_costes``)
are found once per pair over the whole site at the images' scale, which ``DataFrame.attrs
["costes_scale"]`` records.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .objects import ObjectIndex, build_index

log = logging.getLogger(__name__)

FAMILIES: tuple[str, ...] = (
    "areashape",
    "intensity",
    "neighbors",
    "texture",
    "granularity",
    "radial",
    "colocalization",
    "relations",
    "tubeness_radial",
    "skeleton",
)

# family -> (module, function)
_FAMILY_FUNCS: dict[str, tuple[str, str]] = {
    "areashape": ("areashape", "measure_areashape"),
    "intensity": ("intensity", "measure_intensity"),
    "neighbors": ("neighbors", "measure_neighbors"),
    "texture": ("texture", "measure_texture"),
    "granularity": ("granularity", "measure_granularity"),
    "radial": ("radial", "measure_radial_distribution"),
    "colocalization": ("colocalization", "measure_colocalization"),
    "relations": ("relations", "measure_relations"),
    "tubeness_radial": ("radial_centers", "measure_radial_centers"),
    "skeleton": ("skeleton", "measure_skeleton"),
}

# Neighbours are measured for nuclei and cells (within ``neighbors_distance``), plus the
# "Adjacent" variant for cells, as in the JUMP Cell Painting pipeline; not for the cytoplasm ring.
_NEIGHBOR_COMPARTMENTS = ("Nuclei", "Cells")
# the tubeness image's radial distribution is measured in these, around the Nuclei centres (JUMP)
_TUBENESS_COMPARTMENTS = ("Cells", "Cytoplasm")

__all__ = ["FAMILIES", "ObjectIndex", "build_index", "feature_params", "measure_site"]


def feature_params(params: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The ``paint.features`` section: ``params`` (None values left out), then, under ``preset: jump``, the
    schema's ``x-presets.jump`` values for the keys left out, then the config schema's defaults, checked
    (:func:`pairedscreen.config.resolve_section`); no default lives here."""
    from pairedscreen.config import resolve_section

    # the preset's values fill the keys left out, then the defaults (pairedscreen.config.fill_defaults)
    return resolve_section("paint.features", {k: v for k, v in (params or {}).items() if v is not None})


def _family_function(family: str) -> Callable[..., dict[str, np.ndarray]] | None:
    """The measuring function of a family, or None while its module does not exist yet."""
    module, func = _FAMILY_FUNCS[family]
    name = f"{__name__}.{module}"
    try:
        mod = importlib.import_module(name)
    except ModuleNotFoundError as err:
        if err.name != name:  # a real missing dependency inside the module: surface it
            raise
        log.warning("feature family %r skipped: module %s does not exist", family, name)
        return None
    return getattr(mod, func)


def _as_float_images(images: np.ndarray, scale: float | None) -> tuple[np.ndarray, float | None]:
    """(float images, their scale): integer images divided by their dtype's maximum, which is their
    scale (CellProfiler's loading convention); float images keep the ``scale`` given."""
    imgs = np.asarray(images)
    if imgs.ndim != 3:
        raise ValueError(f"images must be (C, H, W), got shape {imgs.shape}")
    if imgs.dtype.kind in "iu":
        top = float(np.iinfo(imgs.dtype).max)
        return imgs.astype(np.float64) / top, top
    if imgs.dtype.kind != "f":
        raise TypeError(f"images must be float or integer, got {imgs.dtype}")
    return imgs, scale


def _location_z(feats: Mapping[str, np.ndarray], channels: Sequence[str]) -> dict[str, np.ndarray]:
    """CellProfiler's Z location columns of a 2-D image: the single plane's index, 0, for every object
    (Identify's ``Location_Center_Z``, MeasureObjectIntensity's ``Location_{CenterMassIntensity,
    MaxIntensity}_Z_{channel}``)."""
    n = len(feats["Location_Center_X"]) if "Location_Center_X" in feats else None
    if n is None:
        raise ValueError("location_z needs the areashape family (Location_Center_X)")
    out = {"Location_Center_Z": np.zeros(n)}
    for ch in channels:
        out[f"Location_CenterMassIntensity_Z_{ch}"] = np.zeros(n)
        out[f"Location_MaxIntensity_Z_{ch}"] = np.zeros(n)
    return out


def _table(
    ids: np.ndarray, names: Sequence[str], columns: Mapping[str, tuple[np.ndarray, Any]]
) -> pd.DataFrame:
    """The site's table: ``object_id`` (int64), then one float64 column per name, NaN in the rows
    of ids its compartment lacks. The float columns are written straight into one NaN-filled
    Fortran-ordered block (each column contiguous), which the DataFrame takes without a copy,
    instead of one array per column that the DataFrame would then copy into its block."""
    n = ids.shape[0]
    block = np.full((len(names), n), np.nan).T
    for j, name in enumerate(names):
        rows, values = columns[name]
        if rows.shape[0] == n:  # every id (rows ascending, unique): the whole column
            block[:, j] = values
        else:
            block[rows, j] = values
    df = pd.DataFrame(block, columns=pd.Index(names, dtype=object), copy=False)
    df.insert(0, "object_id", ids.astype(np.int64))
    return df


def measure_site(
    images: np.ndarray,
    channel_names: Sequence[str],
    nuclei: np.ndarray | None,
    cells: np.ndarray | None,
    cytoplasm: np.ndarray | None,
    params: Mapping[str, Any] | None = None,
    scale: float | None = None,
) -> pd.DataFrame:
    """Measure all requested feature families of one site.

    ``images``: (C, H, W) float in [0, 1] (integer images are divided by their dtype maximum);
    ``scale``: for float images, the maximum of the dtype they were read as (65535 for uint16 files,
    255 for uint8; CellProfiler's image scale), the grid of the Costes threshold search (needed only
    with ``colocalization_costes``; integer images carry their own);
    ``channel_names``: C names used as feature suffixes; ``nuclei``/``cells``/``cytoplasm``:
    (H, W) integer label images sharing object ids (None skips a compartment); ``params``:
    ``paint.features`` keys (:func:`feature_params`: the schema's defaults for those left out),
    ``families`` selecting a subset of
    :data:`FAMILIES`. Returns a DataFrame with an ``object_id`` column (ascending union of the ids
    present in any compartment) and one float64 column per feature.
    """
    unknown = sorted(set((params or {}).get("families") or ()) - set(FAMILIES))
    if unknown:
        raise ValueError(f"unknown feature families {unknown}; known: {list(FAMILIES)}")
    p = feature_params(params)
    families = list(p["families"])
    imgs, scale = _as_float_images(images, scale)
    channels = [str(c) for c in channel_names]
    if len(channels) != imgs.shape[0]:
        raise ValueError(f"{len(channels)} channel names for {imgs.shape[0]} channels")
    if len(set(channels)) != len(channels):
        raise ValueError(f"channel names must be unique: {channels}")

    compartments: dict[str, np.ndarray] = {}
    for name, lab in (("Nuclei", nuclei), ("Cells", cells), ("Cytoplasm", cytoplasm)):
        if lab is None:
            continue
        lab = np.asarray(lab)
        if lab.shape != imgs.shape[1:]:
            raise ValueError(f"{name} labels {lab.shape} do not match images {imgs.shape[1:]}")
        compartments[name] = np.ascontiguousarray(lab, dtype=np.int64)

    indexes = {name: build_index(lab) for name, lab in compartments.items()}
    ids = (
        np.unique(np.concatenate([ix.labels_present for ix in indexes.values()]))
        if indexes
        else np.zeros(0, np.int64)
    )
    funcs = {fam: _family_function(fam) for fam in families}
    pairs: list[tuple[int, int, str, str]] = []
    thresholds: dict[tuple[int, int], tuple[float, float]] = {}
    if "colocalization" in families and funcs["colocalization"] is not None and compartments:
        from .colocalization import channel_pairs, costes_thresholds

        pos = {ch: i for i, ch in enumerate(channels)}
        pairs = [(pos[a], pos[b], a, b) for a, b in channel_pairs(channels)]
        if p["colocalization_costes"]:
            if scale is None:
                raise ValueError("colocalization_costes needs the images' scale (their original dtype "
                                 "maximum, e.g. 65535 for uint16) for float images")
            # one whole-image threshold pair per channel pair, shared by the compartments
            thresholds = {(i, j): costes_thresholds(imgs[i], imgs[j], scale) for i, j, _, _ in pairs}
    # column name -> (rows of ``ids`` its compartment's objects fill, values in labels_present order)
    columns: dict[str, tuple[np.ndarray, Any]] = {}
    tub = None
    if ("tubeness_radial" in families or "skeleton" in families) and "Nuclei" in compartments:
        from .tubeness import tubeness

        if p["tubeness_channel"] not in channels:
            raise ValueError(f"tubeness_channel {p['tubeness_channel']!r} is not a channel: {channels}")
        tub = tubeness(imgs[channels.index(p["tubeness_channel"])], smoothing=float(p["tubeness_smoothing"]),
                       rescale=bool(p["tubeness_rescale"]))

    for comp, lab in compartments.items():
        index = indexes[comp]
        rows = np.searchsorted(ids, index.labels_present)
        feats: dict[str, np.ndarray] = {}
        edge = None
        if "intensity" in families and funcs["intensity"] is not None:
            from .intensity import edge_pixels

            edge = edge_pixels(lab, index)
        for fam in families:
            fn = funcs[fam]
            if fn is None:
                continue
            if fam == "areashape":
                shape = fn(lab, index=index, zernike_degree=int(p["zernike_degree"]))
                feats.update(shape)
                # CellProfiler's object location (Identify modules) is the same pixel centroid
                feats["Location_Center_X"] = shape["AreaShape_Center_X"]
                feats["Location_Center_Y"] = shape["AreaShape_Center_Y"]
            elif fam == "neighbors":
                if comp in _NEIGHBOR_COMPARTMENTS:
                    dist = p["neighbors_nuclei_distance"] if comp == "Nuclei" else None
                    dist = p["neighbors_distance"] if dist is None else dist
                    feats.update(fn(lab, int(dist), index=index))
                if comp == "Cells":
                    feats.update(fn(lab, 1, index=index, method="adjacent"))
            elif fam == "tubeness_radial":
                if tub is not None and comp in _TUBENESS_COMPARTMENTS:
                    from .tubeness import NAME

                    feats.update(fn(tub, lab, compartments["Nuclei"], NAME, p["tubeness_radial_bins"],
                                    index=index))
            elif fam == "skeleton":
                if tub is not None and comp == "Nuclei":   # MeasureObjectSkeleton's seed objects (JUMP)
                    feats.update(fn(tub, lab, smoothing_scale=float(p["skeleton_threshold_smoothing"]),
                                    max_hole_size=int(p["skeleton_max_hole_size"]), index=index))
            elif fam == "relations":
                child = indexes.get("Cytoplasm")
                feats.update(fn(comp, index.labels_present, None if child is None else child.labels_present))
            elif fam == "colocalization":
                from .colocalization import object_pixels

                costes = bool(p["colocalization_costes"])
                # each channel's object pixels gathered once for all its pairs
                px = {c: object_pixels(imgs[c], index) for c in {k for i, j, _, _ in pairs for k in (i, j)}}
                for i, j, a, b in pairs:
                    feats.update(fn(imgs[i], imgs[j], lab, a, b, index=index, costes=costes,
                                    thresholds=thresholds.get((i, j)), values=(px[i], px[j])))
            else:
                for c, ch in enumerate(channels):
                    img = imgs[c]
                    if fam == "intensity":
                        feats.update(fn(img, lab, ch, index=index, edge=edge))
                    elif fam == "texture":
                        feats.update(
                            fn(img, lab, ch, list(p["texture_scales"]), int(p["texture_levels"]), index=index)
                        )
                    elif fam == "granularity":
                        feats.update(
                            fn(
                                img,
                                lab,
                                ch,
                                int(p["granularity_spectrum_length"]),
                                float(p["granularity_subsample_size"]),
                                float(p["granularity_background_subsample_size"]),
                                int(p["granularity_element_size"]),
                                index=index,
                            )
                        )
                    elif fam == "radial":
                        feats.update(fn(img, lab, ch, bins=int(p["radial_bins"]), index=index))
        if p["location_z"] and comp == "Nuclei":
            feats.update(_location_z(feats, channels))
        for key, values in feats.items():
            columns[f"{comp}_{key}"] = (rows, values)
    names = list(columns)
    if p["preset"] == "jump":
        from .jump import jump_columns, missing_by_family, warn_missing

        missing = missing_by_family(columns)
        if missing:
            warn_missing(", ".join(f"{f} {len(v)}" for f, v in missing.items()))
        # exactly the JUMP names, in the list's order
        names = [c for c in jump_columns() if c in columns]
    df = _table(ids, names, columns)
    if thresholds:
        df.attrs["costes_scale"] = float(scale)
    return df
