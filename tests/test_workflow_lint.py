"""The workflow passes `snakemake --lint` (which exits 1 on any finding)."""

from __future__ import annotations

from workdir import minimal_workdir, snakemake


def test_snakemake_lint_clean(tmp_path):
    wd = minimal_workdir(tmp_path / "screen")
    res = snakemake(wd, "--lint")
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "Congratulations" in res.stdout + res.stderr


def test_ruff_clean(repo):
    """The code base is ruff clean (pyproject's [tool.ruff] settings)."""
    import subprocess
    import sys
    from pathlib import Path

    ruff = Path(sys.executable).parent / "ruff"
    res = subprocess.run([str(ruff), "check", "src", "tests", "workflow/scripts", "benchmarks"],
                         cwd=repo, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:]
