"""Reruns touch exactly what a change touches. For every leaf key of the config schema, the key is changed
on the session's finished tiny run and ``snakemake -n`` must plan exactly the jobs of the rules whose stage
reads it (``pairedscreen.stage_config.STAGE_READS``) and their downstream: what Snakemake itself plans for
``--forcerun <those rules>`` on the unchanged config. Every key is checked on its own (grouping keys would
hide a key that reruns nothing where it should); the dry runs only read the run."""

from __future__ import annotations

import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from workdir import REPO, planned_jobs, snakemake

from pairedscreen.config import config_schema, load_config, resolve_model
from pairedscreen.stage_config import STAGE_READS, readers

pytestmark = pytest.mark.e2e

COPIES = "rerun_copies"   # moved copies of files a path key may point at (removed at the end)


def schema_leaves(schema: dict, prefix: str = "") -> dict[str, dict]:
    """Every leaf key of the config schema (dotted) with its schema."""
    out: dict[str, dict] = {}
    for key, sub in (schema.get("properties") or {}).items():
        path = f"{prefix}{key}"
        if isinstance(sub, dict) and sub.get("properties"):
            out.update(schema_leaves(sub, path + "."))
        else:
            out[path] = sub
    return out


def _get(cfg: dict, key: str) -> Any:
    node: Any = cfg
    for p in key.split("."):
        node = node[p]
    return node


def _override(changes: dict[str, Any]) -> dict:
    over: dict = {}
    for key, value in changes.items():
        node = over
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return over


def _changed(value: Any, schema: dict) -> Any:
    """Another valid value of a leaf, by its schema: the next enum value, a flipped boolean, one more
    integer, half a number (0 -> 0.5), an array one item shorter or longer, a string with a suffix."""
    if "enum" in schema:
        options = schema["enum"]
        return options[(options.index(value) + 1) % len(options)]
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value - 1 if schema.get("maximum") == value else value + 1
    if isinstance(value, float):
        return value / 2 if value else 0.5
    if isinstance(value, list) and not value:
        return [(schema.get("items") or {}).get("enum", ["x"])[0]]
    if isinstance(value, list):
        return value[:-1] if len(value) > 1 else [*value, value[0] + 2 if isinstance(value[0], int) else "x"]
    if isinstance(value, str):
        return value + "x"
    raise AssertionError(f"no change rule for {value!r} ({schema})")


def _copy(wd: Path, rel: str) -> str:
    """A copy of the run's file or folder ``rel`` at another path (same content, new name)."""
    src, dst = Path(resolve_model(rel, wd, REPO)), wd / COPIES / Path(rel).name   # (models: repo's too)
    if not dst.exists():
        dst.parent.mkdir(exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dst)
    return str(dst.relative_to(wd))


def changes_for(key: str, schema: dict, cfg: dict, wd: Path) -> dict[str, Any]:
    """The change made for ``key``: usually one new value; paths point at a moved copy of the same file;
    a value that only ever enters resolved is changed so that the resolved value changes too."""
    value = _get(cfg, key)
    channels = list(cfg["paint"]["channels"])
    if key.startswith("sheets.") or key in ("reference.fasta", "reference.gtf", "rna.whitelist",
                                            "truth_dir") or key.endswith(".model"):
        return {key: _copy(wd, value)}
    if key in ("reference.index", "reference.t2g"):   # a prebuilt index takes both
        return {"reference.index": _copy(wd, "results/reference/kb/index.idx"),
                "reference.t2g": _copy(wd, "results/reference/kb/t2g.txt")}
    if key.endswith(".channel") or key.endswith(".nuclear_channel"):
        return {key: next(c for c in channels if c != value)}
    if key == "pair.cells_h5mu":                      # auto and true both write it on the tiny screen
        return {key: False}
    if key == "train.batch_holdout":                  # hold out the batch of the first plate
        plates = pd.read_csv(wd / cfg["sheets"]["plates"], sep="\t", dtype=str)
        return {key: plates["batch"].iloc[0]}
    if key == "rna.sort_memory":
        return {key: "3G"}
    if key == "landing.chemistry":
        return {key: "10xv2"}
    if key.startswith("paint.channels."):
        return {key: value + 10 if isinstance(value, int) else value + "x"}
    if key == "paint.image_pattern":
        return {key: "x" + value}
    if value is None:
        nullable = {"paint.segmentation.tile_batch_size": 4, "train.crops.size": 32,
                    "profiles.blocklist": ["Cells_AreaShape_Area"], "profiles.pca.n_components": 5,
                    "paint.features.neighbors_nuclei_distance": 1}
        if key.endswith("normalize_percentiles"):
            return {key: [1.0, 99.0]}
        assert key in nullable, f"{key}: a null default with no value to change it to (add one here)"
        return {key: nullable[key]}
    if value == "" and isinstance(value, str):
        return {key: "x"}
    return {key: _changed(value, schema)}


def _jobs(out: str) -> set[tuple[str, tuple]]:
    """(rule, wildcards) of the planned jobs; the chunk wildcard dropped (a changed wells_per_job makes
    other chunks of the same plates)."""
    return {(rule, tuple(sorted((k, v) for k, v in wc.items() if k != "chunk")))
            for rule, wc in planned_jobs(out)}


@pytest.fixture(scope="module")
def finished(tiny_run):
    wd = tiny_run.workdir
    dry = snakemake(wd, "-n")
    assert dry.returncode == 0 and not planned_jobs(dry.stdout), \
        "the tiny run is not up to date before the rerun test:\n" + dry.stdout[-3000:]
    yield wd
    shutil.rmtree(wd / COPIES, ignore_errors=True)
    for f in (wd / "config").glob("rerun_*.yaml"):
        f.unlink()


def test_every_rule_declares_the_config_it_reads():
    """STAGE_READS names every rule of the workflow, and no rule passes a config section by hand."""
    text = "\n".join(p.read_text() for p in sorted((REPO / "workflow" / "rules").glob("*.smk")))
    rules = set(re.findall(r"^\s*rule (\w+):", text, re.M))
    assert rules - {"all"} <= set(STAGE_READS), sorted(rules - {"all"} - set(STAGE_READS))
    assert not set(STAGE_READS) - rules, sorted(set(STAGE_READS) - rules)
    scripts = "\n".join(p.read_text() for p in (REPO / "workflow" / "scripts").glob("*.py"))
    assert "snakemake.config" not in scripts       # stages see only what their rule passes


def test_a_changed_key_reruns_exactly_its_readers_and_their_downstream(finished):
    wd = finished
    cfg = load_config(wd / "config" / "config.yaml")
    leaves = schema_leaves(config_schema())
    assert len(leaves) > 100, len(leaves)

    plans: dict[str, tuple[dict, frozenset]] = {}
    single = {k for k, sch in leaves.items() if len(sch.get("enum", [None, None])) == 1}
    assert single == {"rna.doublets.method"}      # one allowed value (scrublet): nothing to change it to
    for i, (key, schema) in enumerate(sorted(leaves.items())):
        if key in single:
            continue
        changes = changes_for(key, schema, cfg, wd)
        assert all(_get(cfg, k) != v for k, v in changes.items()), (key, changes)
        rules = frozenset(r for k in changes for r in readers(k))
        f = wd / "config" / f"rerun_{i:03d}.yaml"
        f.write_text(yaml.safe_dump(_override(changes)))
        plans[key] = ({"file": f.name, "changes": changes}, rules)

    def dry(*args: str) -> set | str:
        res = snakemake(wd, "-n", *args)
        return _jobs(res.stdout) if res.returncode == 0 else (res.stdout + res.stderr)[-1500:]

    def expected(rules: frozenset) -> set | str:
        return dry("--forcerun", *sorted(rules)) if rules else set()

    def actual(key: str) -> set | str:
        conf = wd / "config"
        return dry("--configfile", str(conf / "config.yaml"), str(conf / plans[key][0]["file"]))

    with ThreadPoolExecutor(2) as pool:
        sets = sorted({rules for _, rules in plans.values()}, key=sorted)
        want = dict(zip(sets, pool.map(expected, sets), strict=True))
        got = dict(zip(plans, pool.map(actual, plans), strict=True))

    problems = []
    for key, (plan, rules) in plans.items():
        w, g = want[rules], got[key]
        if isinstance(w, str) or isinstance(g, str):
            failed = w if isinstance(w, str) else g
            problems.append(f"{key} -> {plan['changes']}: snakemake -n failed: {failed}")
        elif w != g:
            problems.append(f"{key} -> {plan['changes']} (read by {sorted(rules) or 'no rule'}): "
                            f"planned but not expected {sorted(g - w)[:6]}; expected but not planned "
                            f"{sorted(w - g)[:6]}")
    assert not problems, f"{len(problems)} of {len(plans)} keys:\n" + "\n".join(problems)
    # the test can fail: the keys users edit often plan what the issue asked for
    assert not got["rna.sort_memory"] and not got["landing.gex_suffix"]
    assert {r for r, _ in got["train.croissant.description"]} == {"train_croissant", "datasheet", "report",
                                                                  "all"}
    assert "rna_cells" not in {r for r, _ in got["rna.knockdown.alpha"]}
