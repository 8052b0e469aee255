"""The ``jump`` feature preset against the JUMP cpg0016 list of per-object columns.

Ground truth is the JUMP profiling recipe's list (resources/jump/, 3,672 names): the preset's settings
must be the ones the names encode (texture scales and grey levels, neighbour distances, radial bins),
its output must be exactly the list (same column set, in the list's order, nothing extra); what the
default preset lacks is printed by family (``pytest -s``).
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from _features_a_data import synthetic_site

from pairedscreen.paint.features import feature_params, measure_site
from pairedscreen.paint.features.jump import family, jump_columns, missing_by_family

CHANNELS = ("DNA", "ER", "RNA", "AGP", "Mito")


@pytest.fixture(scope="module")
def site():
    imgs, nuc, cells, cyto = synthetic_site(seed=5, shape=(160, 160), n_cells=14, n_channels=5)
    return imgs, nuc, cells, cyto


@pytest.fixture(scope="module")
def jump_df(site):
    imgs, nuc, cells, cyto = site
    return measure_site(imgs, CHANNELS, nuc, cells, cyto, {"preset": "jump"})


def test_list_is_the_recipes():
    cols = jump_columns()
    assert len(cols) == len(set(cols)) == 3672
    assert not any(c.startswith("Image_") for c in cols)


def test_preset_settings_are_the_lists():
    """Texture scales/levels, neighbour distances and radial bins read off the JUMP names."""
    p = feature_params({"preset": "jump"})
    cols = jump_columns()
    tex = {re.match(r".*_(\d+)_\d\d_(\d+)$", c).groups() for c in cols if family(c) == "Texture"}
    assert sorted(p["texture_scales"]) == sorted({int(s) for s, _ in tex})
    assert {p["texture_levels"]} == {int(g) for _, g in tex}
    nb = {c.split("_")[0]: c.rsplit("_", 1)[1] for c in cols
          if family(c) == "Neighbors" and "Adjacent" not in c}
    assert nb == {"Nuclei": str(p["neighbors_nuclei_distance"]), "Cells": str(p["neighbors_distance"])}
    bins = {re.search(r"_\d+of(\d+)$", c).group(1) for c in cols
            if family(c) == "RadialDistribution" and "mito_tubeness" not in c and "Overflow" not in c}
    assert bins == {str(p["radial_bins"])}
    # an explicit key wins over the preset
    assert feature_params({"preset": "jump", "texture_scales": [3]})["texture_scales"] == [3]


def test_preset_through_the_config_loader():
    """The workflow's config passes through fill_defaults: the preset must survive it (keys set win)."""
    from pairedscreen.config import config_schema, fill_defaults

    cfg = fill_defaults({"paint": {"features": {"preset": "jump", "radial_bins": 8}}}, config_schema())
    feats = cfg["paint"]["features"]
    assert feats["texture_scales"] == [3, 5, 10] and feats["radial_bins"] == 8
    assert feature_params(feats) == feats


def test_default_unchanged_by_preset_keys():
    """The default preset resolves to the settings the tiny screen always used."""
    p = feature_params()
    assert p["preset"] == "default" and p["texture_scales"] == [3] and p["location_z"] is False
    assert p["neighbors_nuclei_distance"] is None and "relations" not in p["families"]


def test_jump_columns_exactly_the_list(jump_df):
    cols = [c for c in jump_df.columns if c != "object_id"]
    order = {c: i for i, c in enumerate(jump_columns())}
    extra = [c for c in cols if c not in order]
    assert not extra, f"columns outside the JUMP list: {extra[:10]}"
    missing = [c for c in jump_columns() if c not in set(cols)]
    assert not missing, f"JUMP columns the preset does not make: {missing[:20]}"
    assert cols == list(jump_columns())


def test_missing_per_family(site, jump_df):
    imgs, nuc, cells, cyto = site
    default = measure_site(imgs, CHANNELS, nuc, cells, cyto, None)
    for name, df in (("default", default), ("jump", jump_df)):
        miss = missing_by_family(df.columns)
        have = len(jump_columns()) - sum(map(len, miss.values()))
        print(f"\n{name}: {have} of {len(jump_columns())} JUMP columns; missing per family: "
              + ", ".join(f"{f} {len(v)}" for f, v in miss.items()))
        for f, v in miss.items():
            print(f"  {f}: {v[:4]}{' ...' if len(v) > 4 else ''}")
    assert missing_by_family(jump_df.columns) == {}
    # the default preset makes none of the jump-only families' columns
    miss_default = missing_by_family(default.columns)
    assert len(miss_default["ObjectSkeleton"]) == 4


def test_relations_and_location_z(site, jump_df):
    _, nuc, cells, cyto = site
    ids = jump_df["object_id"].to_numpy()
    has_nuc = np.isin(ids, np.unique(nuc[nuc > 0]))
    has_cyto = np.isin(ids, np.unique(cyto[cyto > 0]))
    n = jump_df["Nuclei_Number_Object_Number"].to_numpy()
    assert np.array_equal(n[has_nuc], ids[has_nuc]) and np.isnan(n[~has_nuc]).all()
    assert np.array_equal(jump_df["Nuclei_Parent_NucleiIncludingEdges"].to_numpy()[has_nuc], ids[has_nuc])
    kids = jump_df["Nuclei_Children_Cytoplasm_Count"].to_numpy()
    assert np.array_equal(kids[has_nuc], has_cyto[has_nuc] * 1.0)
    assert np.array_equal(jump_df["Cells_Children_Cytoplasm_Count"].to_numpy(), has_cyto * 1.0)
    c = jump_df["Cytoplasm_Number_Object_Number"].to_numpy()
    assert np.array_equal(c[has_cyto], ids[has_cyto])
    z = jump_df[[c for c in jump_df.columns if c.startswith("Nuclei_Location") and "_Z" in c]]
    assert z.shape[1] == 11 and (z.to_numpy()[has_nuc] == 0).all()
