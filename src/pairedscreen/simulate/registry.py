"""The perturbation registry of a simulated screen: genes, perturbations, guides and their planted classes.

Every perturbation belongs to one *class* (the planted truth):

- ``both``    knockdown of an expressed target + a downstream RNA program + a morphology shift; pairs of
              ``both`` perturbations share one program (same RNA program and same morphology direction),
              which is what cross-modal concordance should find;
- ``rna``     knockdown + its own RNA program, no morphology change;
- ``paint``   morphology shift only; its target is not expressed in the RNA arm, so no RNA change at all;
- ``neither`` inert guides: no knockdown, no RNA program, no morphology change;
- ``control`` non-targeting controls.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pairedscreen.simulate.spec import ScreenSpec

GUIDE_READ = "R2"
GUIDE_PATTERN = "^NNNNNNNNNN(BC)"   # 10 nt before the 20 nt protospacer in guide-capture R2
GUIDE_SCAFFOLD = ("GTTTAAGAGCTAAGCTGGAAACAGCATAGCAAGTTTAAATAAGGCTAGTCCGTTATCAACTTGAAAAAGTGGCACC"
                  "GAGTCGGTGC")
CLASSES = ("both", "rna", "paint", "neither")


@dataclass(frozen=True)
class Registry:
    genes: pd.DataFrame          # gene_id, gene_name, role (target|unexpressed_target|mito|ribo|background)
    perturbations: pd.DataFrame  # registry sheet columns + truth columns: effect_class, program
    guides: pd.DataFrame         # guides sheet columns (10x feature reference + perturbation_id)

    def perturbation_sheet(self) -> pd.DataFrame:
        cols = ["perturbation_id", "perturbation_type", "target_gene", "is_control", "control_type"]
        return self.perturbations[cols].copy()

    def guide_sheet(self) -> pd.DataFrame:
        cols = ["id", "name", "read", "pattern", "sequence", "feature_type",
                "target_gene_id", "target_gene_name", "perturbation_id"]
        return self.guides[cols].copy()


def _random_seqs(rng: np.random.Generator, n: int, length: int, min_dist: int = 4) -> list[str]:
    seqs: list[str] = []
    arr: list[np.ndarray] = []
    while len(seqs) < n:
        s = rng.integers(0, 4, length)
        if any(int((s != a).sum()) < min_dist for a in arr):
            continue
        arr.append(s)
        seqs.append("".join("ACGT"[i] for i in s))
    return seqs


def make_registry(spec: ScreenSpec) -> Registry:
    """Deterministic registry for ``spec.seed``."""
    rng = np.random.default_rng([spec.seed, 1])
    n_target = sum(spec.classes.values())
    n_mito, n_ribo = 13, 10
    n_bg = spec.n_genes - n_mito - n_ribo - n_target
    if n_bg < 40:
        raise ValueError(
            f"n_genes={spec.n_genes} is too small for {n_target} targets (need >= {n_target + 63})")

    names = [f"MT-SYN{i + 1}" for i in range(n_mito)] + [f"RPL{i + 1}" for i in range(n_ribo)]
    roles = ["mito"] * n_mito + ["ribo"] * n_ribo
    target_names = [f"TGT{i + 1:02d}" for i in range(n_target)]
    bg_names = [f"GENE{i + 1:04d}" for i in range(n_bg)]
    names += target_names + bg_names
    roles += [""] * n_target + ["background"] * n_bg
    genes = pd.DataFrame({"gene_id": [f"SYNG{i + 1:06d}" for i in range(len(names))],
                          "gene_name": names, "role": roles})

    rows = []
    program = 0
    k = 0
    for cls in CLASSES:
        for j in range(spec.classes.get(cls, 0)):
            gene = target_names[k]
            genes.loc[genes.gene_name == gene, "role"] = "unexpressed_target" if cls == "paint" else "target"
            if cls == "both":
                prog = program + j // 2          # pairs of `both` perturbations share a program
            elif cls in ("rna", "paint"):
                prog = -1                        # assigned below: a private program each
            else:
                prog = -1
            rows.append({"perturbation_id": gene, "perturbation_type": "CRISPRi", "target_gene": gene,
                         "is_control": False, "control_type": "", "effect_class": cls, "program": prog})
            k += 1
        if cls == "both":
            program += (spec.classes.get(cls, 0) + 1) // 2
    for r in rows:
        if r["effect_class"] in ("rna", "paint"):
            r["program"] = program
            program += 1
    for i in range(spec.n_controls):
        rows.append({"perturbation_id": f"NTC_{i + 1}", "perturbation_type": "control", "target_gene": "",
                     "is_control": True, "control_type": "non-targeting", "effect_class": "control",
                     "program": -1})
    perts = pd.DataFrame(rows)

    seqs = _random_seqs(rng, len(perts) * spec.guides_per_perturbation, 20)
    gid = dict(zip(genes.gene_name, genes.gene_id, strict=True))
    grows = []
    for i, p in enumerate(perts.itertuples()):
        for g in range(spec.guides_per_perturbation):
            name = f"{p.perturbation_id}-g{g + 1}"
            grows.append({
                "id": name, "name": name, "read": GUIDE_READ, "pattern": GUIDE_PATTERN,
                "sequence": seqs[i * spec.guides_per_perturbation + g],
                "feature_type": "CRISPR Guide Capture",
                "target_gene_id": gid[p.target_gene] if not p.is_control else "Non-Targeting",
                "target_gene_name": p.target_gene if not p.is_control else "Non-Targeting",
                "perturbation_id": p.perturbation_id,
            })
    return Registry(genes=genes, perturbations=perts, guides=pd.DataFrame(grows))
