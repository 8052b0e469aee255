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


def _lint_imports(repo, config=None):
    """`lint-imports` from the test environment's bin, on this checkout's source (not an installed copy)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "lint-imports"
    path = os.pathsep.join([str(Path(repo) / "src"), os.environ.get("PYTHONPATH", "")])
    env = dict(os.environ, PYTHONPATH=path)
    args = [str(exe), "--no-cache"] + (["--config", str(config)] if config else [])
    return subprocess.run(args, cwd=repo, capture_output=True, text=True, env=env)


def test_import_contracts_kept(repo):
    """The layers of pyproject's [tool.importlinter] hold: rna and paint independent, quality free of
    pair/report/simulate, report free of analysis modules, the simulator imported only by the CLI, the
    low-level modules importing no other layer."""
    res = _lint_imports(repo)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-4000:]
    assert "0 broken" in out and "KEPT" in out


def test_import_contracts_catch_a_crossing(repo, tmp_path):
    """The checker really sees the package's imports: a contract the code breaks today (the quality stage
    imports the paint arm's profile normalisation, allowed by our layers) is reported broken, so a kept
    contract is not a vacuous pass."""
    cfg = tmp_path / "contracts.toml"
    cfg.write_text('[tool.importlinter]\nroot_package = "pairedscreen"\n\n'
                   '[[tool.importlinter.contracts]]\nname = "quality may not import paint"\n'
                   'type = "forbidden"\nsource_modules = ["pairedscreen.quality"]\n'
                   'forbidden_modules = ["pairedscreen.paint"]\n')
    res = _lint_imports(repo, cfg)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "BROKEN" in out, out[-4000:]
