"""The workflow passes `snakemake --lint` (which exits 1 on any finding)."""

from __future__ import annotations

from workdir import minimal_workdir, snakemake


def test_snakemake_lint_clean(tmp_path):
    wd = minimal_workdir(tmp_path / "screen")
    res = snakemake(wd, "--lint")
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "Congratulations" in res.stdout + res.stderr
