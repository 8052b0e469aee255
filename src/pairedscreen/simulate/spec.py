"""Size and effect parameters of a simulated paired screen, with named presets."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any


@dataclass(frozen=True)
class RnaSpec:
    n_libraries: int = 1
    cells_per_library: int = 300
    empty_droplets_per_library: int = 1500
    doublet_rate: float = 0.06
    low_quality_rate: float = 0.05
    mean_umis_per_cell: float = 1500.0
    ambient_umis_per_empty: float = 15.0
    reads_per_umi: float = 1.6
    guide_umis_per_cell: float = 40.0
    guide_background_umis: float = 1.5
    guide_dropout_rate: float = 0.02   # cells whose guide was not captured
    knockdown_remaining: float = 0.15  # fraction of target expression left in knocked-down cells
    program_log2fc: float = 1.5
    program_size: int = 12


@dataclass(frozen=True)
class PaintSpec:
    n_plates: int = 1
    wells_per_perturbation: int = 1    # per plate
    extra_control_wells: int = 2       # per plate, on top of the controls' own wells
    sites_per_well: int = 1
    image_size: int = 160
    cells_per_site: int = 12
    nucleus_diameter: float = 12.0
    cell_diameter: float = 26.0
    vignetting: float = 0.35           # relative intensity drop at the image corner
    edge_effect: float = 0.30          # relative intensity increase in edge wells (evaporation)
    morphology_shift: float = 0.6      # size of planted per-perturbation morphology effects


@dataclass(frozen=True)
class ScreenSpec:
    seed: int = 0
    n_genes: int = 150
    classes: dict[str, int] = field(
        default_factory=lambda: {"both": 2, "rna": 2, "paint": 2, "neither": 2}
    )
    n_controls: int = 2
    guides_per_perturbation: int = 2
    rna: RnaSpec = field(default_factory=RnaSpec)
    paint: PaintSpec = field(default_factory=PaintSpec)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_overrides(self, **kw: Any) -> ScreenSpec:
        """Override top-level fields and ``rna.x`` / ``paint.x`` fields, e.g. ``{"paint.n_plates": 4}``."""
        top: dict[str, Any] = {}
        rna: dict[str, Any] = {}
        paint: dict[str, Any] = {}
        for key, value in kw.items():
            if value is None:
                continue
            if key.startswith("rna."):
                rna[key[4:]] = value
            elif key.startswith("paint."):
                paint[key[6:]] = value
            else:
                top[key] = value
        return replace(self, rna=replace(self.rna, **rna), paint=replace(self.paint, **paint), **top)


PRESETS: dict[str, ScreenSpec] = {
    # the whole workflow in about two minutes on 2 cores: tests that need a full run use this
    "tiny": ScreenSpec(),
    # the README demo: 2 RNA libraries (2 batches), 2 plates with replicate wells and 2 sites per well;
    # 4 shared programs (8 `both` perturbations) so cross-modal concordance has the power to be tested
    "demo": ScreenSpec(
        n_genes=300,
        classes={"both": 8, "rna": 2, "paint": 2, "neither": 2},
        rna=RnaSpec(n_libraries=2, cells_per_library=600, empty_droplets_per_library=3000),
        paint=PaintSpec(n_plates=2, wells_per_perturbation=2, extra_control_wells=4, sites_per_well=2,
                        image_size=256, cells_per_site=30),
    ),
}


def get_preset(name: str) -> ScreenSpec:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}") from None
