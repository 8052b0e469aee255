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
from config_values import SCHEMA

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
    """(function, keyword, config key) of every library keyword that takes a config key's value: none has a
    default of its own (the schema is the only place a default lives)."""
    from pairedscreen.paint import illumination, image_qc, ingest, segment
    from pairedscreen.paint import profiles as prof
    from pairedscreen.paint import stages as paint_stages
    from pairedscreen.paint.aggregate import aggregate_wells, plate_wells, stream_plate, well_features
    from pairedscreen.paint.features import areashape, granularity, radial, texture
    from pairedscreen.paint.screen_profiles import ScreenProfiles
    from pairedscreen.quality import (
        batch,
        concordance,
        effect,
        paint_units,
        position,
        replicate,
        summary,
        truth,
        units,
    )
    from pairedscreen.rna import calling, cellranger, count, guide_model, guides, qc
    from pairedscreen.rna import stages as rna_stages
    from pairedscreen.train import celleval_run, crops, evals

    quality = [(f, "n_permutations", "quality.permutations") for f in (
        effect.edistance_test, effect.edistance_table, concordance.mantel, concordance.cka_test,
        concordance.concordance, batch.batch_predictability, truth.concordance_recovery,
        position.position_effects, position.PositionEffects.__init__)]
    quality += [(f, "null_size", "quality.permutations") for f in (replicate.phenotypic_activity,
                                                                   replicate.consistency)]
    quality += [(f, "seed", "quality.seed") for f in (
        effect.edistance_table, effect.pca_embedding, concordance.mantel, concordance.cka_test,
        concordance.concordance, batch.batch_predictability, replicate.phenotypic_activity,
        replicate.consistency, position.position_effects, position.PositionEffects.__init__,
        truth.concordance_recovery, units.replicate_pseudobulks, paint_units.PlateRows.controls,
        prof.assign_splits)]
    quality += [(f, "alpha", "quality.alpha") for f in (
        truth.hit_recovery, truth.concordance_recovery, truth.truth_recovery, summary.summarize_hits,
        position.summarize)]
    quality += [(effect.edistance_table, "max_cells", "quality.max_cells"),
                (effect.pca_embedding, "n_comps", "quality.n_pcs"),
                (replicate.rna_features, "n_top", "quality.n_top_genes"),
                (replicate.paint_features, "pca_variance", "quality.paint_pca_variance")]
    rna = [(f, kw, f"rna.cell_calling.{kw}") for f in (calling.call_cells, calling.emptydrops)
           for kw in ("ambient_max_umis", "min_umis", "n_iter")]
    rna += [(calling.call_cells, "fdr", "rna.cell_calling.fdr")]
    rna += [(qc.compute_qc, kw, f"rna.qc.{kw}") for kw in (
        "mt_prefix", "ribo_prefixes", "nmads_counts", "nmads_genes", "nmads_mt", "max_pct_mt")]
    rna += [(qc.flag_doublets, kw, f"rna.doublets.{kw}") for kw in ("expected_rate", "knn")]
    rna += [(f, kw, f"rna.guides.{kw}") for f in (guides.call_guides, guides.assign_guides)
            for kw in ("method", "min_umis", "threshold", "max_fraction")]
    rna += [(guides.assign_guides, kw, f"rna.guides.{kw}") for kw in ("many_umis", "max_unassigned_many")]
    rna += [(guides.mixture_threshold, "min_umis", "rna.guides.min_umis"),
            (guide_model.fit_guide, "min_umis", "rna.guides.min_umis"),
            (cellranger.matrix_path, "cells", "rna.cellranger.cells"),
            (cellranger.load_outs, "cells", "rna.cellranger.cells"),
            (count.kb_count, "memory", "rna.sort_memory"),
            (rna_stages.run_rna_merge, "on_empty", "on_empty")]
    paint = [(image_qc.add_image_qc, kw, f"paint.qc.{kw}") for kw in (
        "max_saturation_pct", "min_focus_plls", "max_focus_plls", "min_signal_to_noise")]
    paint += [(f, "smoothing_sigma", "paint.illumination.smoothing_sigma") for f in (
        illumination.compute_plate_illumination, illumination.compute_illumination,
        illumination.IlluminationAccumulator.result)]
    paint += [(ingest.build_image_index, "on_bad_image", "paint.on_bad_image"),
              (areashape.measure_areashape, "zernike_degree", "paint.features.zernike_degree"),
              (texture.measure_texture, "scales", "paint.features.texture_scales"),
              (texture.measure_texture, "levels", "paint.features.texture_levels"),
              (radial.measure_radial_distribution, "bins", "paint.features.radial_bins")]
    paint += [(granularity.measure_granularity, kw, f"paint.features.granularity_{kw}") for kw in (
        "spectrum_length", "subsample_size", "background_subsample_size", "element_size")]
    paint += [(segment.resolve_device, "gpu", "paint.segmentation.gpu"),
              (segment.load_model, "gpu", "paint.segmentation.gpu"),
              (segment.match_compartments, "min_nucleus_overlap", "paint.segmentation.min_nucleus_overlap"),
              (segment.segment_compartment, "tile_batch_size", "paint.segmentation.tile_batch_size")]
    profiles = [(aggregate_wells, "operation", "profiles.aggregate"),
                (plate_wells, "how", "profiles.aggregate"),
                (stream_plate, "how", "profiles.aggregate"),
                (well_features, "how", "profiles.aggregate"),
                (prof.aggregate_plate_file, "operation", "profiles.aggregate"),
                (prof.aggregate_plates, "operation", "profiles.aggregate"),
                (prof.normalize_plates, "method", "profiles.normalize"),
                (prof.select_features, "operations", "profiles.feature_select"),
                (prof.select_features, "outlier_cutoff", "profiles.outlier_cutoff"),
                (prof.select_features, "blocklist", "profiles.blocklist"),
                (ScreenProfiles.__init__, "normalize", "profiles.normalize"),
                (ScreenProfiles.__init__, "position_correction", "profiles.position_correction"),
                (ScreenProfiles.select, "outlier_cutoff", "profiles.outlier_cutoff"),
                (ScreenProfiles.select, "blocklist", "profiles.blocklist"),
                (paint_stages.usable_plates, "on_empty", "on_empty"),
                (paint_stages.run_profiles, "on_empty", "on_empty")]
    profiles += [(prof.build_profiles, kw, f"profiles.{kw}") for kw in (
        "aggregate", "normalize", "feature_select", "outlier_cutoff", "position_correction", "blocklist")]
    train = [(evals.evaluate, "seed", "train.seed"),
             (crops.fit_crop_size, "factor", "train.crops.size_factor"),
             (crops.fit_crop_size, "quantile", "train.crops.size_quantile"),
             (celleval_run.run, "profile", "train.evals.celleval_profile"),
             (celleval_run.run, "seed", "train.seed")]
    return quality + rna + paint + profiles + train


@pytest.mark.parametrize("func,kw,key", _library_defaults(),
                         ids=[f"{f.__qualname__}.{k}" for f, k, _ in _library_defaults()])
def test_library_keywords_of_config_keys_have_no_default(func, kw, key):
    """Each listed keyword is required: callers pass the resolved config's value (stages) or the schema's
    (tests and benchmarks, through the loader), never a copy of the default in the signature."""
    assert key in schema_defaults(), key
    p = inspect.signature(func).parameters[kw]
    assert p.default is inspect.Parameter.empty, \
        f"{func.__module__}.{func.__qualname__}({kw}={p.default!r}): a default for `{key}`; the schema has it"


# keyword defaults equal to a schema leaf's default under the leaf's (last) name that are not that config
# value: (module.qualname, keyword) -> why
NOT_CONFIG = {
    ("pairedscreen.paint.illumination.IlluminationAccumulator.__init__", "method"):
        "the illumination estimator (background/mean), not rna.guides.method; no config key",
    ("pairedscreen.paint.illumination.compute_illumination", "method"):
        "the illumination estimator (background/mean), not rna.guides.method; no config key",
    ("pairedscreen.paint.illumination.compute_plate_illumination", "method"):
        "the illumination estimator (background/mean), not rna.guides.method; no config key",
    ("pairedscreen.paint.train.train_segmentation", "batch_size"):
        "training batch of `pairedscreen train-segmentation` (CLI option), not paint.segmentation.batch_size",
    ("pairedscreen.paint.train.train_segmentation", "seed"): "the training CLI's seed option",
    ("pairedscreen.simulate.spec.ScreenSpec.__init__", "seed"): "the simulator's seed (preset/CLI)",
    ("pairedscreen.rna.stages.run_rna_cells", "seed"): "the RNA arm's fixed seed; the schema has no rna seed",
    ("pairedscreen.rna.calling.call_cells", "seed"): "the RNA arm's fixed seed; the schema has no rna seed",
    ("pairedscreen.rna.calling.emptydrops", "seed"): "the RNA arm's fixed seed; the schema has no rna seed",
    ("pairedscreen.rna.qc.flag_doublets", "seed"): "the RNA arm's fixed seed; the schema has no rna seed",
    ("pairedscreen.rna.scrublet.scrublet", "seed"): "the RNA arm's fixed seed; the schema has no rna seed",
}
# keyword names that take a schema leaf's value under another name
ALIASES = {"n_permutations": "permutations", "null_size": "permutations", "n_top": "n_top_genes",
           "n_comps": "n_pcs", "pca_variance": "paint_pca_variance", "memory": "sort_memory"}


def _public_functions():
    """Every public function and public class's method defined in ``src/pairedscreen`` (imported modules)."""
    import importlib
    import pkgutil

    import pairedscreen

    for info in pkgutil.walk_packages(pairedscreen.__path__, "pairedscreen."):
        if info.name.startswith("pairedscreen.report.__main__"):
            continue
        mod = importlib.import_module(info.name)
        for name, obj in vars(mod).items():
            if name.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
                continue
            if inspect.isfunction(obj):
                yield obj
            elif inspect.isclass(obj):
                for mname, meth in vars(obj).items():
                    if inspect.isfunction(meth) and (mname == "__init__" or not mname.startswith("_")):
                        yield meth


def schema_default_copies() -> list[str]:
    """Keyword defaults of public functions whose name is a schema leaf's last component (or an alias of
    one) and whose value is that leaf's schema default: copies of the schema in a signature."""
    leaves: dict[str, list[str]] = {}
    for key in schema_defaults():
        leaves.setdefault(key.rsplit(".", 1)[-1], []).append(key)
    d = schema_defaults()
    found = []
    for f in _public_functions():
        for p in inspect.signature(f).parameters.values():
            if p.default is inspect.Parameter.empty:
                continue
            default = list(p.default) if isinstance(p.default, tuple) else p.default
            for key in leaves.get(ALIASES.get(p.name, p.name), []):
                if type(default) is type(d[key]) or {type(default), type(d[key])} <= {int, float}:
                    if default == d[key] and (f"{f.__module__}.{f.__qualname__}", p.name) not in NOT_CONFIG:
                        name = f"{f.__module__}.{f.__qualname__}"
                        found.append(f"{name}({p.name}={p.default!r}) copies `{key}`")
    return sorted(set(found))


def test_no_public_function_copies_a_schema_default():
    """Discovered automatically: no public library function has a keyword default that is a schema
    leaf's default under that leaf's name (allow-list NOT_CONFIG: same name and value, not the config's)."""
    found = schema_default_copies()
    assert not found, "\n".join(found)
    known = {f"{f.__module__}.{f.__qualname__}": f for f in _public_functions()}
    for (qualname, kw), why in NOT_CONFIG.items():   # the allow-list: live keyword defaults, with a reason
        assert why and qualname in known, qualname
        assert inspect.signature(known[qualname]).parameters[kw].default is not inspect.Parameter.empty, \
            (qualname, kw)


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
        stages.run_profiles([], "r.tsv", load_config(MINIMAL)["profiles"], tmp_path / "p", tmp_path / "c",
                            on_empty=SCHEMA["on_empty"])
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
