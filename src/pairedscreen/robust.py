"""The one robust location/scale: the median and the MAD scaled to a normal SD (x 1.4826).

Used by the RNA QC bounds (`rna.qc`), the image noise estimate (`paint.image_qc`) and the
``mad_robustize`` profile normalisation (`paint.profiles`), so all three mean the same thing by "MAD".
"""

from __future__ import annotations

import numpy as np

MAD_TO_SD = 1.4826   # 1 / Phi^-1(3/4): the MAD of a normal sample times this estimates its SD


def median_mad(x: np.ndarray, axis: int | None = None, *,
               skipna: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(median, MAD x 1.4826) of ``x`` over ``axis`` (all values when None); ``skipna`` ignores NaN
    (an all-NaN slice gives NaN, with numpy's RuntimeWarning)."""
    median = np.nanmedian if skipna else np.median
    x = np.asarray(x)
    center = median(x, axis=axis)
    dev = np.abs(x - (center if axis is None else np.expand_dims(center, axis)))
    return center, median(dev, axis=axis) * MAD_TO_SD
