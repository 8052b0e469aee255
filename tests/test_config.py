"""One source of defaults: the config schema. The loader fills every schema default, refuses unknown keys
with the nearest valid one, and the stages and library functions use exactly the schema's values."""

from __future__ import annotations

import ast
import copy
import inspect
import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import yaml

from pairedscreen import config as C
from pairedscreen.config import ConfigError, load_config, resolve_section, schema_defaults

REPO = Path(__file__).resolve().parents[1]
MINIMAL = {
    "sheets": {"perturbations": "config/perturbations.tsv", "guides": "config/guides.tsv",
               "rna_libraries": "config/rna_libraries.tsv", "plates": "config/plates.tsv"},
    "reference": {"fasta": "raw/reference/transcriptome.fa", "gtf": "raw/reference/genes.gtf"},
    "rna": {},
    "paint": {"image_pattern": "{well}_s{site}_w{channel}.tif", "channels": {"DNA": 1, "AGP": 4},
              "segmentation": {"nuclei": {"model": "nuclei", "channel": "DNA", "diameter": 12},
                               "cells": {"model": "cyto3", "channel": "AGP", "diameter": 26}}},
}


def _dig(cfg: dict, path: str):
    for part in path.split("."):
        cfg = cfg[part]
    return cfg


def _drop(cfg: dict, path: str) -> None:
    *parents, leaf = path.split(".")
    for part in parents:
        if part not in cfg:
            return
        cfg = cfg[part]
    cfg.pop(leaf, None)


def test_schema_has_defaults_for_the_known_disagreements():
    d = schema_defaults()
    assert d["rna.qc.max_pct_mt"] == 20 and d["profiles.position_correction"] is True
    assert len(d) >= 60


@pytest.mark.parametrize("path", sorted(schema_defaults()))
def test_every_schema_default_reaches_the_resolved_config(path):
    """The shipped config with one key left out resolves to the schema's default for it."""
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    _drop(raw, path)
    assert _dig(load_config(raw), path) == schema_defaults()[path]
    minimal = copy.deepcopy(MINIMAL)
    _drop(minimal, path)
    assert _dig(load_config(minimal), path) == schema_defaults()[path]


def test_the_shipped_config_sets_the_same_values_as_the_schema():
    """config/config.yaml documents the defaults; where it sets a key, it is the schema's value (so the
    demo, the tests and a user who deletes a line all run the same pipeline)."""
    raw = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    differ = {}
    for path, default in schema_defaults().items():
        try:
            v = _dig(raw, path)
        except KeyError:
            continue
        if v != default and path not in {"truth_dir", "reference.fasta", "reference.gtf", "rna.whitelist"}:
            differ[path] = (v, default)
    assert not differ, differ


def _library_defaults():
    """(function, keyword, config key) of every library keyword default that mirrors a config key."""
    from pairedscreen.paint import illumination, image_qc
    from pairedscreen.paint import profiles as prof
    from pairedscreen.paint.aggregate import aggregate_wells, plate_wells
    from pairedscreen.quality import batch, concordance, effect, position, replicate, summary, truth
    from pairedscreen.rna import calling, guides, qc

    quality = [(f, "n_permutations", "quality.permutations") for f in (
        effect.edistance_test, effect.edistance_table, concordance.mantel, concordance.cka_test,
        concordance.concordance, batch.batch_predictability, truth.concordance_recovery,
        position.position_effects)]
    quality += [(f, "null_size", "quality.permutations") for f in (replicate.phenotypic_activity,
                                                                   replicate.consistency)]
    quality += [(f, "seed", "quality.seed") for f in (
        effect.edistance_table, concordance.mantel, concordance.concordance, batch.batch_predictability,
        replicate.phenotypic_activity, replicate.consistency, position.position_effects)]
    quality += [(f, "alpha", "quality.alpha") for f in (
        truth.hit_recovery, truth.concordance_recovery, truth.truth_recovery, summary.summarize_hits,
        position.summarize)]
    quality += [(effect.edistance_table, "max_cells", "quality.max_cells")]
    return quality + [
        (guides.call_guides, "method", "rna.guides.method"),
        (guides.call_guides, "min_umis", "rna.guides.min_umis"),
        (guides.call_guides, "threshold", "rna.guides.threshold"),
        (guides.call_guides, "max_fraction", "rna.guides.max_fraction"),
        (calling.call_cells, "fdr", "rna.cell_calling.fdr"),
        (calling.call_cells, "ambient_max_umis", "rna.cell_calling.ambient_max_umis"),
        (calling.call_cells, "min_umis", "rna.cell_calling.min_umis"),
        (calling.call_cells, "n_iter", "rna.cell_calling.n_iter"),
        (qc.compute_qc, "mt_prefix", "rna.qc.mt_prefix"),
        (qc.compute_qc, "ribo_prefixes", "rna.qc.ribo_prefixes"),
        (qc.compute_qc, "nmads_counts", "rna.qc.nmads_counts"),
        (qc.compute_qc, "nmads_genes", "rna.qc.nmads_genes"),
        (qc.compute_qc, "nmads_mt", "rna.qc.nmads_mt"),
        (qc.compute_qc, "max_pct_mt", "rna.qc.max_pct_mt"),
        (qc.flag_doublets, "expected_rate", "rna.doublets.expected_rate"),
        (qc.flag_doublets, "knn", "rna.doublets.knn"),
        (guides.assign_guides, "method", "rna.guides.method"),
        (guides.assign_guides, "min_umis", "rna.guides.min_umis"),
        (guides.assign_guides, "threshold", "rna.guides.threshold"),
        (guides.assign_guides, "max_fraction", "rna.guides.max_fraction"),
        (guides.assign_guides, "many_umis", "rna.guides.many_umis"),
        (guides.assign_guides, "max_unassigned_many", "rna.guides.max_unassigned_many"),
        (image_qc.add_image_qc, "max_saturation_pct", "paint.qc.max_saturation_pct"),
        (image_qc.add_image_qc, "min_focus_plls", "paint.qc.min_focus_plls"),
        (image_qc.add_image_qc, "max_focus_plls", "paint.qc.max_focus_plls"),
        (image_qc.add_image_qc, "min_signal_to_noise", "paint.qc.min_signal_to_noise"),
        (illumination.compute_plate_illumination, "smoothing_sigma", "paint.illumination.smoothing_sigma"),
        (aggregate_wells, "operation", "profiles.aggregate"),
        (plate_wells, "how", "profiles.aggregate"),
        (prof.build_profiles, "aggregate", "profiles.aggregate"),
        (prof.build_profiles, "normalize", "profiles.normalize"),
        (prof.build_profiles, "feature_select", "profiles.feature_select"),
        (prof.build_profiles, "outlier_cutoff", "profiles.outlier_cutoff"),
        (prof.build_profiles, "position_correction", "profiles.position_correction"),
        (prof.build_profiles, "blocklist", "profiles.blocklist"),
    ]


@pytest.mark.parametrize("func,kw,key", _library_defaults(),
                         ids=[f"{f.__name__}.{k}" for f, k, _ in _library_defaults()])
def test_library_keyword_defaults_equal_the_schema_or_are_removed(func, kw, key):
    p = inspect.signature(func).parameters[kw]
    if p.default is inspect.Parameter.empty:
        return  # removed: callers must say what they want
    want = schema_defaults()[key]
    got = list(p.default) if isinstance(p.default, tuple) else p.default
    assert got == want, f"{func.__module__}.{func.__name__}({kw}={p.default!r}) but the schema says {want!r}"


def test_feature_and_segmentation_fallbacks_come_from_the_schema():
    """No copy of the schema's defaults in the paint modules: what a partial section gets is the schema's."""
    import pairedscreen.paint.features as F
    import pairedscreen.paint.segment as S

    assert not hasattr(F, "DEFAULT_PARAMS") and not hasattr(S, "SEGMENTATION_DEFAULTS")
    d = schema_defaults()
    got = F.feature_params({"radial_bins": 7})
    assert got["radial_bins"] == 7
    schema = {k.split(".")[-1]: v for k, v in d.items() if k.startswith("paint.features.")}
    assert {k: v for k, v in got.items() if k != "radial_bins"} == \
        {k: v for k, v in schema.items() if k != "radial_bins"}
    seg = S.resolved({"nuclei": {"model": "m", "channel": "DNA", "diameter": 10},
                      "cells": {"model": "m", "channel": "AGP", "nuclear_channel": "DNA", "diameter": 20}})
    for key in ("gpu", "batch_size", "min_size", "min_nucleus_overlap", "tile_batch_size"):
        assert seg[key] == d[f"paint.segmentation.{key}"], key
    for comp in ("nuclei", "cells"):
        for key in ("flow_threshold", "cellprob_threshold"):
            assert seg[comp][key] == d[f"paint.segmentation.{comp}.{key}"], (comp, key)


def test_stage_modules_and_rules_have_no_config_fallbacks():
    """Stages index the resolved config (`params["key"]`): no `.get(key, fallback)` on a config mapping
    in any stage module or rule, so the schema is the only source of a default."""
    stage_files = [*sorted((REPO / "src" / "pairedscreen").glob("*/stage*.py"))]
    assert len(stage_files) >= 4
    offenders = []
    for f in stage_files:
        for node in ast.walk(ast.parse(f.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "get" and isinstance(node.func.value, ast.Name)
                    and node.func.value.id in {"params", "config", "cfg", "q", "cc", "dbl", "gd", "qc"}):
                offenders.append(f"{f.name}:{node.lineno}")
    for f in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        for i, line in enumerate(f.read_text().splitlines(), 1):
            if re.search(r"(config|SEG|REF)\b[^#]*\.get\(", line):
                offenders.append(f"{f.name}:{i}")
    assert not offenders, offenders


def test_rna_stage_passes_the_schema_defaults(monkeypatch, tmp_path):
    """run_rna_cells with the loader's `rna` block of a config that sets nothing: every library call gets
    the schema's value (max_pct_mt 20, not the 100 the stage used to fall back to)."""
    from pairedscreen.rna import stages

    seen = {}

    def spy(name, ret=None):
        def f(adata, *args, **kwargs):
            seen[name] = kwargs
            return ret(adata) if ret else adata
        return f

    def called(a):
        a.uns["cell_calling"] = {}
        return a, pd.DataFrame({"rank": [1]})

    monkeypatch.setattr(stages.calling, "call_cells", spy("call_cells", called))
    monkeypatch.setattr(stages.qc, "compute_qc", spy("compute_qc"))
    monkeypatch.setattr(stages.qc, "flag_doublets", spy("flag_doublets"))
    monkeypatch.setattr(stages.guide_calls, "assign_guides", spy("assign_guides"))
    monkeypatch.setattr(stages, "read_guides", lambda p: pd.DataFrame())
    monkeypatch.setattr(stages, "read_registry", lambda p: pd.DataFrame())
    a = ad.AnnData(X=sp.csr_matrix(np.ones((3, 2), np.int64)))
    a.write_h5ad(tmp_path / "raw.h5ad")
    rna = load_config(MINIMAL)["rna"]
    stages.run_rna_cells(tmp_path / "raw.h5ad", tmp_path / "raw.h5ad", "g.tsv", "r.tsv", 100, rna,
                         tmp_path / "cells.h5ad", tmp_path / "ranks.parquet")
    d = schema_defaults()
    for name, section in (("call_cells", "cell_calling"), ("compute_qc", "qc"), ("flag_doublets", "doublets"),
                          ("assign_guides", "guides")):
        for kw, value in seen[name].items():
            key = f"rna.{section}.{kw}"
            if key in d:
                assert (list(value) if isinstance(value, tuple) else value) == d[key], key
    assert seen["compute_qc"]["max_pct_mt"] == 20


def test_profiles_stage_passes_the_schema_defaults(monkeypatch, tmp_path):
    """run_profiles with the loader's `profiles` block: position correction on, as the schema says (the
    stage used to fall back to False)."""
    from pairedscreen.paint import stages

    seen = {}

    def stop(*args, **kwargs):
        seen.update(kwargs)
        raise StopIteration

    monkeypatch.setattr(stages, "write_profiles", stop)
    monkeypatch.setattr(stages, "usable_plates", lambda paths, reg, on_empty: ([], None))
    monkeypatch.setattr(stages, "read_registry", lambda p: pd.DataFrame())
    with pytest.raises(StopIteration):
        stages.run_profiles([], "r.tsv", load_config(MINIMAL)["profiles"], tmp_path / "p", tmp_path / "c")
    d = schema_defaults()
    for kw in ("normalize", "feature_select", "outlier_cutoff", "position_correction", "blocklist"):
        assert seen[kw] == d[f"profiles.{kw}"], kw
    assert seen["position_correction"] is True


# -------------------------------------------------------------------------------------- unknown keys
@pytest.mark.parametrize("path,value,expect", [
    ("rna.qc.max_pct_mito", 30, "unknown key `rna.qc.max_pct_mito`: did you mean `max_pct_mt`?"),
    ("qualty", {}, "unknown key `qualty`: did you mean `quality`?"),
    ("rna.max_pct_mt", 30, "unknown key `rna.max_pct_mt`: did you mean `rna.qc.max_pct_mt`?"),
    ("paint.segmentation.nuclei.diamter", 3, "unknown key `paint.segmentation.nuclei.diamter`: did you mean "
                                             "`diameter`?"),
    ("profiles.positon_correction", True, "did you mean `position_correction`?"),
])
def test_unknown_keys_are_refused_with_the_nearest_valid_key(path, value, expect):
    cfg = copy.deepcopy(MINIMAL)
    *parents, leaf = path.split(".")
    node = cfg
    for part in parents:
        node = node.setdefault(part, {})
    node[leaf] = value
    with pytest.raises(ConfigError) as err:
        load_config(cfg, source="config/config.yaml")
    assert str(err.value).startswith("config/config.yaml: 1 problem")
    assert expect in str(err.value)


def test_all_config_problems_at_once_with_value_and_allowed():
    cfg = copy.deepcopy(MINIMAL)
    cfg["rna"]["qc"] = {"max_pct_mito": 30, "max_pct_mt": 150}
    cfg["profiles"] = {"normalize": "zscore"}
    cfg["quality"] = {"permutations": "many"}
    with pytest.raises(ConfigError) as err:
        load_config(cfg, source="config/config.yaml")
    msg = str(err.value)
    assert msg.startswith("config/config.yaml: 4 problems"), msg
    assert ("`rna.qc.max_pct_mt` is 150, not a number <= 100. "
            "Fix: set `rna.qc.max_pct_mt` to a number <= 100") in msg
    assert "`profiles.normalize` is 'zscore', not one of mad_robustize, standardize" in msg
    assert "`quality.permutations` is 'many', not a value of type integer" in msg
    assert len(err.value.problems) == 4


def test_missing_required_section_is_named():
    cfg = copy.deepcopy(MINIMAL)
    del cfg["paint"]["segmentation"]["cells"]
    with pytest.raises(ConfigError, match=r"`paint.segmentation`: 'cells' is a required property"):
        load_config(cfg)


def test_resolve_section_fills_and_checks_one_section():
    q = resolve_section("quality", {"permutations": 50})
    assert q["permutations"] == 50 and q["alpha"] == schema_defaults()["quality.alpha"]
    with pytest.raises(ConfigError, match="did you mean `permutations`"):
        resolve_section("quality", {"permutatons": 50})


def test_loader_does_not_modify_its_input():
    cfg = copy.deepcopy(MINIMAL)
    load_config(cfg)
    assert cfg == MINIMAL
    assert C.fill_defaults({}, {"properties": {"a": {"default": {}, "properties": {"b": {"default": 1}}}}}) \
        == {"a": {"b": 1}}
