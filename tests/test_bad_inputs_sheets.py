"""Bad config and sheets: refused before any job, every problem at once, each naming the file, the line, the
column, the value, what is allowed and the fix. The same message comes from `snakemake -n` (which plans
nothing) and from `pairedscreen validate` (which runs the same checks without Snakemake)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from workdir import minimal_workdir, snakemake, write_tsv

from pairedscreen.cli import main as cli

PM_HEADER = ["well", "perturbation_id", "replicate"]


def _edit_config(wd: Path, change: Callable[[dict], None]) -> None:
    p = wd / "config" / "config.yaml"
    cfg = yaml.safe_load(p.read_text())
    change(cfg)
    p.write_text(yaml.safe_dump(cfg, sort_keys=False))


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def bad_boolean(wd: Path) -> None:
    _replace(wd / "config" / "perturbations.tsv", "\tfalse\t", "\tmaybe\t")


def plate_map_three_problems(wd: Path) -> None:
    write_tsv(wd / "config" / "plate_maps" / "P1.tsv", PM_HEADER,
              [["B02", "TGT01", 1], ["Z99", "NTC_1", 1], ["C05", "TGT01", "two"], ["C06", "GHOST7", 1]])


def guide_read_not_allowed(wd: Path) -> None:
    _replace(wd / "config" / "guides.tsv", "\tR2\t", "\tR3\t")


def chemistry_pattern(wd: Path) -> None:
    _replace(wd / "config" / "rna_libraries.tsv", "\t10xv3\t", "\t10xv9\t")


def registry_missing_column(wd: Path) -> None:
    p = wd / "config" / "perturbations.tsv"
    lines = [ln.split("\t") for ln in p.read_text().splitlines()]
    p.write_text("\n".join("\t".join(r[:1] + r[2:]) for r in lines) + "\n")   # drop perturbation_type


def config_yaml_syntax(wd: Path) -> None:
    p = wd / "config" / "config.yaml"
    p.write_text("# an unclosed list\nfeature_set: [a, b\n" + p.read_text())


def several_sheets(wd: Path) -> None:
    bad_boolean(wd)
    guide_read_not_allowed(wd)
    (wd / "raw" / "fastq" / "L1_gex_R2.fastq.gz").unlink()


def library_id_path_traversal(wd: Path) -> None:
    _replace(wd / "config" / "rna_libraries.tsv", "L1\t", "../../evil\t")


def plate_id_shell_metacharacters(wd: Path) -> None:
    _replace(wd / "config" / "plates.tsv", "P1\t", "P1;touch pwned\t")


def perturbation_id_command_substitution(wd: Path) -> None:
    for sheet in ("perturbations.tsv", "guides.tsv", "plate_maps/P1.tsv"):
        p = wd / "config" / sheet
        p.write_text(p.read_text().replace("TGT01", "TGT$(id)"))


def config_typo_nested(wd: Path) -> None:
    _edit_config(wd, lambda c: c["rna"]["qc"].update(max_pct_mito=c["rna"]["qc"].pop("max_pct_mt")))


def config_typo_top(wd: Path) -> None:
    _edit_config(wd, lambda c: c.update(qualty=c.pop("quality")))


def config_bad_value(wd: Path) -> None:
    _edit_config(wd, lambda c: c["profiles"].update(normalize="zscore"))


# case -> (make it bad, fragments the message must hold: file, line, column/key, value, allowed, fix)
CASES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "is_control not a boolean": (bad_boolean, [
        "config/perturbations.tsv, line 2: column 'is_control' has 'maybe', not a boolean",
        "Fix: write true or false in column 'is_control' (also accepted: t/f, yes/no, y/n, 1/0, any case)"]),
    "plate map with three problems": (plate_map_three_problems, [
        "3 problems in the sample sheets:",
        "config/plate_maps/P1.tsv, line 3: column 'well' has 'Z99', not a 384-well name A01..P24",
        "Fix: write a 384-well name A01..P24 (A1 and a01 are accepted too) in column 'well'",
        "config/plate_maps/P1.tsv, line 4: column 'replicate' has 'two', not an integer. "
        "Fix: write a whole number in column 'replicate'",
        "config/plate_maps/P1.tsv, line 5: unknown perturbation_id 'GHOST7'. Fix: add 'GHOST7' to the "
        "perturbation registry (config/perturbations.tsv) or correct the id"]),
    "guide read outside the enum": (guide_read_not_allowed, [
        "config/guides.tsv, line 2: column 'read' has 'R3', not one of R1, R2. "
        "Fix: write one of R1, R2 in column 'read'"]),
    "chemistry not matching its pattern": (chemistry_pattern, [
        "config/rna_libraries.tsv, line 2: column 'chemistry' has '10xv9', not 10xv2, 10xv3 or a kb "
        "technology string such as 0,0,16:0,16,28:1,0,0 (pattern ^(10xv2|10xv3|[0-9,:-]+)$)",
        "Fix: write 10xv2, 10xv3 or a kb technology string"]),
    "registry without a required column": (registry_missing_column, [
        "config/perturbations.tsv, line 1: required column(s) perturbation_type missing from the header",
        "Fix: add the column(s) perturbation_type (see workflow/schemas/perturbations.schema.yaml)"]),
    "problems in three sheets at once": (several_sheets, [
        "3 problems in the sample sheets:",
        "config/perturbations.tsv, line 2: column 'is_control' has 'maybe'",
        "config/guides.tsv, line 2: column 'read' has 'R3'",
        "config/rna_libraries.tsv, line 2: FASTQ 'raw/fastq/L1_gex_R2.fastq.gz' (column gex_fastq_r2) "
        "does not exist. Fix: correct the path"]),
    # ids become paths and shell words: refused before anything uses them (no traversal, no injection)
    "library id with a path traversal": (library_id_path_traversal, [
        "config/rna_libraries.tsv, line 2: column 'library_id' has '../../evil', not letters, digits and "
        "_ . - (starting with a letter or digit)", "Fix: write letters, digits and _ . -"]),
    "plate id with shell metacharacters": (plate_id_shell_metacharacters, [
        "config/plates.tsv, line 2: column 'plate_id' has 'P1;touch pwned', not letters, digits and _ . -"]),
    "perturbation id with a command substitution": (perturbation_id_command_substitution, [
        "config/perturbations.tsv, line 2: column 'perturbation_id' has 'TGT$(id)', not letters, digits "
        "and _ . : + -", "config/guides.tsv, line 2: column 'id' has 'TGT$(id)-g1'"]),
    "config key typo, nested": (config_typo_nested, [
        "config/config.yaml: 1 problem", "unknown key `rna.qc.max_pct_mito`: did you mean `max_pct_mt`?"]),
    "config key typo, top level": (config_typo_top, ["unknown key `qualty`: did you mean `quality`?"]),
    "config value outside the enum": (config_bad_value, [
        "`profiles.normalize` is 'zscore', not one of mad_robustize, standardize. "
        "Fix: set `profiles.normalize` to one of mad_robustize, standardize"]),
    # the line and column an editor shows (1-based): the `[` opened on line 2 after "feature_set: "
    "config YAML syntax error": (config_yaml_syntax, [
        "config/config.yaml: 1 problem", "YAML syntax error at line 3, column ",
        "(while parsing a flow sequence at line 2, column 14)", "Fix: correct the YAML there"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_refused_before_any_job(case, tmp_path, capsys):
    make_bad, fragments = CASES[case]
    wd = minimal_workdir(tmp_path / "screen")
    make_bad(wd)

    assert cli(["validate", str(wd)]) == 1
    err = capsys.readouterr().err
    for f in fragments:
        assert f in err, f"{f!r} not in:\n{err}"

    res = snakemake(wd, "-n")
    out = res.stdout + res.stderr
    assert res.returncode != 0
    for f in fragments:
        assert f in out, f"{f!r} not in:\n{out[-4000:]}"
    assert "Job stats" not in out and "rule " not in res.stdout   # nothing was planned
    assert "Traceback" not in out and "Traceback" not in err       # a message, not a stack
    assert not (wd / "results").exists()
    assert not [q for q in tmp_path.parent.rglob("*") if q.name in ("pwned", "evil")]   # nothing injected


def test_validate_ok_prints_a_one_line_summary(tmp_path, capsys):
    wd = minimal_workdir(tmp_path / "screen")
    assert cli(["validate", str(wd)]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    assert out[0].endswith("ok: 2 perturbations (1 controls), 2 guides, 1 RNA libraries, 1 plates (3 wells)")
