"""The SLURM submission check (pairedscreen.slurm) and the per-plate image manifest, without a cluster."""

from __future__ import annotations

import os

import pytest

from pairedscreen.paint.manifest import image_listing, update_manifest
from pairedscreen.slurm import SlurmSetupError, Targets, check, env_targets, resolve, targets_from_resources

SINFO = "cpu\ngpu\n"                          # `sinfo -h -o %R`
ASSOC = "lab1|\nlab2|gpu\n"  # `sacctmgr -n -P show associations user=U format=account,partition`


def fake(cmd: list[str]) -> str:
    return {"sinfo": SINFO, "sacctmgr": ASSOC}[cmd[0]]


def test_profile_values_resolve_like_snakemake(monkeypatch):
    monkeypatch.setenv("PAIREDSCREEN_SLURM_ACCOUNT", "lab1")
    monkeypatch.delenv("PAIREDSCREEN_SLURM_PARTITION", raising=False)
    assert resolve("'$PAIREDSCREEN_SLURM_ACCOUNT'") == "lab1"
    assert resolve("'$PAIREDSCREEN_SLURM_PARTITION'") == "$PAIREDSCREEN_SLURM_PARTITION"
    assert resolve("all") == "all"           # a bare name stays a name (not Python's all())
    t = targets_from_resources({"slurm_partition": "'cpu'", "slurm_account": "lab1"},
                               {"paint_segment": {"slurm_partition": "'gpu'"}}, ["kb_ref", "paint_segment"])
    assert t.partitions == {"cpu": ["kb_ref"], "gpu": ["paint_segment"]}
    assert t.accounts == {"lab1": ["kb_ref", "paint_segment"]}


def test_good_settings_pass():
    check(Targets({"lab1": ["r"]}, {"cpu": ["r"], "gpu": ["paint_segment"]}), user="ana", run=fake)
    check(Targets({"LAB2": ["r"]}, {"gpu": ["r"]}), user="ana", run=fake)   # sacctmgr lower-cases accounts


def test_every_problem_reported_at_once_with_the_fix():
    t = env_targets("nope", "$PAIREDSCREEN_SLURM_PARTITION", "gpux")
    with pytest.raises(SlurmSetupError) as e:
        check(t, user="ana", run=fake)
    msg = str(e.value)
    assert len(e.value.problems) == 3, msg
    assert "PAIREDSCREEN_SLURM_PARTITION is not set" in msg and "partitions here: cpu, gpu" in msg
    assert "partition 'gpux' (used by paint_segment)" in msg
    assert "export PAIREDSCREEN_SLURM_GPU_PARTITION=<one of: cpu, gpu>" in msg
    assert "account 'nope'" in msg and "<one of: lab1, lab2>" in msg


def test_account_limited_to_partitions():
    with pytest.raises(SlurmSetupError, match="account 'lab2' may not use partition 'cpu'"):
        check(Targets({"lab2": ["r"]}, {"cpu": ["r"]}), user="ana", run=fake)


def test_no_slurm_tools_named():
    def missing(cmd):
        raise FileNotFoundError(cmd[0])

    with pytest.raises(SlurmSetupError, match="`sinfo` is not on PATH"):
        check(Targets({"a": ["r"]}, {"cpu": ["r"]}), run=missing)


def test_manifest_rewritten_only_when_an_image_changes(tmp_path):
    d = tmp_path / "P1"
    (d / "sub").mkdir(parents=True)
    for name in ("A01_s1_w1.tif", "A01_s1_w2.tif", "sub/A02_s1_w1.tif", ".DS_Store"):
        (d / name).write_bytes(b"1234")
    out = tmp_path / "results" / "image_manifest.tsv"
    assert update_manifest(d, out) is True
    text = out.read_text()
    assert [line.split("\t")[0] for line in text.splitlines()[1:]] == [
        "A01_s1_w1.tif", "A01_s1_w2.tif", "sub/A02_s1_w1.tif"]
    stamp = out.stat().st_mtime_ns
    assert update_manifest(d, out) is False and out.stat().st_mtime_ns == stamp
    st = (d / "A01_s1_w2.tif").stat()
    (d / "A01_s1_w2.tif").write_bytes(b"4321")                       # same size, new bytes
    os.utime(d / "A01_s1_w2.tif", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    assert update_manifest(d, out) is True and out.read_text() != text
    assert out.read_text() == image_listing(d)
