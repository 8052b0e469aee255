"""Matplotlib figures of the report, each returned as a ``data:image/png;base64,...`` URI.

Every function takes the structures made by :mod:`pairedscreen.report.collect` and returns a figure
URI, or ``None`` when there is nothing to draw. Figures are small PNGs (the report must stay a few MB).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import NullFormatter  # noqa: E402

from pairedscreen.plate import N_COLS, N_ROWS, ROWS  # noqa: E402
from pairedscreen.report.inputs import flag  # noqa: E402

DPI = 90
MAX_SCATTER = 5000
C_MAIN = "#2b6cb0"
C_ALT = "#dd6b20"
C_MUTED = "#a0aec0"
C_BAD = "#c53030"
C_OK = "#2f855a"
ARM_COLORS = {"rna": C_MAIN, "paint": C_ALT}
CLASS_COLORS = {"both": "#6b46c1", "rna": C_MAIN, "paint": C_ALT, "neither": "#718096", "control": "#1a202c"}

plt.rcParams.update({
    "font.size": 8, "axes.titlesize": 9, "axes.labelsize": 8, "axes.spines.top": False,
    "axes.spines.right": False, "legend.fontsize": 7, "legend.frameon": False, "figure.dpi": DPI,
})


def to_uri(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if abs(v) >= 100 else f"{v:.3g}"


# --------------------------------------------------------------------------------------------- RNA


def knee_plot(knee: Mapping[str, Any], title: str) -> str:
    fig, ax = plt.subplots(figsize=(4.2, 3.2))
    rank, umis, called = knee["rank"], np.maximum(knee["umis"], 0.5), knee["called"].astype(bool)
    ax.plot(rank, umis, color=C_MUTED, lw=1, zorder=1)
    ax.scatter(rank[~called], umis[~called], s=3, color=C_MUTED, label="background", zorder=2)
    ax.scatter(rank[called], umis[called], s=4, color=C_MAIN,
               label=f"called cells ({knee['n_called']:,})", zorder=3)
    for (name, thr), ls in zip(knee["thresholds"].items(), ("--", ":", "-.", (0, (1, 3))), strict=False):
        ax.axhline(thr, color=C_BAD, ls=ls, lw=0.8, label=f"{name} = {_fmt(thr)}")
    ax.set(xscale="log", yscale="log", xlabel="barcode rank", ylabel="UMIs",
           title=f"{title}: barcode rank ({knee['n_barcodes']:,} barcodes)")
    ax.legend(loc="lower left")
    return to_uri(fig)


_QC_LABELS = {"total_counts": "UMIs per cell", "n_genes_by_counts": "genes per cell",
              "pct_counts_mt": "% mitochondrial", "pct_counts_ribo": "% ribosomal"}


def qc_plot(qc: Mapping[str, Mapping[str, Any]], title: str) -> str | None:
    if not qc:
        return None
    fig, axes = plt.subplots(1, len(qc), figsize=(2.6 * len(qc), 2.6), squeeze=False)
    for ax, (metric, d) in zip(axes[0], qc.items(), strict=True):
        v = np.asarray(d["values"], float)
        v = v[np.isfinite(v)]
        if d["log"]:
            bins = np.geomspace(max(v.min(), 1), max(v.max(), 2), 40) if v.size else 10
            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())  # 2x10^3, 3x10^3... labels collide
        else:
            bins = 40
        ax.hist(v, bins=bins, color=C_MAIN, alpha=0.8)
        for side in ("lower", "upper"):
            t = d[side]
            if t is not None and np.isfinite(t):
                ax.axvline(t, color=C_BAD, ls="--", lw=1)
                ax.annotate(_fmt(t), (t, 1), xycoords=("data", "axes fraction"), color=C_BAD, fontsize=7,
                            ha="left", va="top", rotation=90)
        label = _QC_LABELS.get(metric, metric)
        sub = f"{d['nmads']:g} MADs" if d["nmads"] else "no filter"
        if d.get("n_fail") is not None:
            sub += f", {d['n_fail']} fail"
        ax.set(xlabel=label, title=f"{label}\n({sub})")
    axes[0][0].set_ylabel("cells")
    fig.suptitle(f"{title}: QC metrics of called cells (dashed: thresholds)", fontsize=9, y=1.1)
    fig.subplots_adjust(wspace=0.3)  # cheaper than tight_layout; savefig trims the margins
    return to_uri(fig)


def doublet_plot(d: Mapping[str, Any], title: str) -> str:
    fig, ax = plt.subplots(figsize=(3.6, 2.8))
    ax.hist(d["scores"], bins=40, color=C_MAIN, alpha=0.8)
    if d["threshold"] is not None:
        ax.axvline(d["threshold"], color=C_BAD, ls="--", lw=1, label=f"threshold {d['threshold']:.3g}")
    n = d["n_predicted"]
    ax.set(xlabel="doublet score", ylabel="cells", yscale="log",
           title=f"{title}: doublets" + (f" ({n} predicted, {100 * n / max(len(d['scores']), 1):.1f}%)"
                                         if n is not None else ""))
    if d["threshold"] is not None:
        ax.legend()
    return to_uri(fig)


def guide_plot(g: Mapping[str, Any], title: str) -> str:
    fig, axes = plt.subplots(1, 2, figsize=(7.0, 2.8))
    vals = np.asarray(g["umis"], float)
    bins = np.arange(0, np.log10(max(vals.max() if vals.size else 1, 1) + 1) + 0.1, 0.05)
    for ax, v, lab in ((axes[0], vals, "all non-zero guide counts"),
                       (axes[1], np.asarray(g["top_umis"], float), "top guide per cell")):
        ax.hist(np.log10(v + 1), bins=bins, color=C_MAIN, alpha=0.8)
        ax.set(xlabel="log10(guide UMIs + 1)", ylabel="count", yscale="log", title=lab)
        thr = np.asarray(g["thresholds"], float)
        thr = thr[np.isfinite(thr)]
        if thr.size:
            lo, med, hi = np.log10(np.percentile(thr, [0, 50, 100]) + 1)
            if hi > lo:
                ax.axvspan(lo, hi, color=C_BAD, alpha=0.12, label="per-guide threshold range")
            ax.axvline(med, color=C_BAD, ls="--", lw=1,
                       label=f"{'median ' if thr.size > 1 else ''}threshold {np.median(thr):.3g} UMIs")
        if g.get("min_umis") is not None:
            ax.axvline(np.log10(float(g["min_umis"]) + 1), color="k", ls=":", lw=0.8,
                       label=f"min_umis {g['min_umis']}")
        ax.legend(loc="upper right")
    fig.suptitle(f"{title}: guide UMIs (assignment: {g.get('method') or 'n/a'})", fontsize=9, y=1.04)
    fig.subplots_adjust(wspace=0.3)
    return to_uri(fig)


def moi_plot(moi: pd.DataFrame, title: str) -> str:
    fig, ax = plt.subplots(figsize=(3.2, 2.8))
    colors = [C_MUTED if k == 0 else (C_MAIN if k == 1 else C_ALT) for k in moi.n_guides]
    ax.bar(moi.n_guides.astype(str), moi.n_cells, color=colors)
    tot = max(int(moi.n_cells.sum()), 1)
    for x, y in zip(moi.n_guides.astype(str), moi.n_cells, strict=True):
        ax.annotate(f"{100 * y / tot:.0f}%", (x, y), ha="center", va="bottom", fontsize=7)
    ax.set(xlabel="guides assigned per cell", ylabel="cells (pass QC)",
           title=f"{title}: guides per cell (MOI)")
    return to_uri(fig)


def cells_per_perturbation_plot(df: pd.DataFrame, title: str) -> str:
    special = df.perturbation.isin(["multiple", "unassigned"])
    d = df[~special].sort_values("n_cells", ascending=False)
    if len(d) <= 60:
        fig, ax = plt.subplots(figsize=(max(3.5, 0.16 * len(d) + 1.2), 2.8))
        ax.bar(d.perturbation, d.n_cells, color=C_MAIN)
        ax.tick_params(axis="x", rotation=90, labelsize=6)
        ax.set(ylabel="cells (pass QC)")
    else:
        fig, ax = plt.subplots(figsize=(4.2, 2.8))
        ax.hist(d.n_cells, bins=40, color=C_MAIN)
        ax.set(xlabel="cells per perturbation (pass QC)", ylabel="perturbations")
    if len(d):
        ax.axhline(float(d.n_cells.median()), color=C_BAD, ls="--", lw=0.8) if len(d) <= 60 else \
            ax.axvline(float(d.n_cells.median()), color=C_BAD, ls="--", lw=0.8)
    extra = ", ".join(f"{r.perturbation}: {r.n_cells}" for r in df[special].itertuples())
    ax.set_title(f"{title}: cells per perturbation (median {d.n_cells.median():.0f})"
                 + (f"\n{extra}" if extra else ""))
    return to_uri(fig)


def knockdown_plot(kd: pd.DataFrame, alpha: float) -> str | None:
    if kd is None or kd.empty or "remaining_fraction" not in kd:
        return None
    d = kd.sort_values("remaining_fraction", kind="stable")
    sig = flag(d["significant"]) if "significant" in d else pd.Series(False, d.index)
    labels = (d["target_gene"].astype(str) if "target_gene" in d else d["perturbation_id"].astype(str))
    if "perturbation_id" in d and "target_gene" in d:
        labels = np.where(d.perturbation_id.astype(str) == labels, labels,
                          d.perturbation_id.astype(str) + " (" + labels + ")")
    n = len(d)
    measured = d["measurable"].astype(bool) if "measurable" in d else pd.Series(True, d.index)
    n_measured = int(measured.sum())
    unmeasured = f"; {n - n_measured} not measurable (no bar, reason in the table)" if n_measured < n else ""
    fig, ax = plt.subplots(figsize=(min(max(4.0, 0.18 * n + 1.5), 14), 3.2))
    colors = np.where(sig, C_MAIN, C_MUTED)
    if n <= 80:
        ax.bar(np.arange(n), d.remaining_fraction.clip(upper=2), color=colors)
        ax.set_xticks(np.arange(n), labels, rotation=90, fontsize=6)
    else:
        ax.scatter(np.arange(n), d.remaining_fraction.clip(upper=2), s=4, c=colors)
        ax.set_xlabel("targets, ranked")
    ax.axhline(1.0, color="k", lw=0.6)
    ax.set(ylabel="target expression remaining\n(vs controls)", ylim=(0, max(1.3, float(
        d.remaining_fraction.clip(upper=2).max()) * 1.05)),
        title=f"Knockdown efficiency per target: {int(sig.sum())}/{n_measured} significant "
              f"(padj < {alpha:g}, blue){unmeasured}")
    return to_uri(fig)


# --------------------------------------------------------------------------------------------- paint


def plate_heatmaps(heatmaps: Mapping[str, np.ndarray], title: str,
                   flagged: Sequence[tuple[int, int]] = (), subtitle: str = "") -> str | None:
    """Per-well values on the plate (one grid per map); ``flagged``: (row, col) of wells with a flagged
    site."""
    if not heatmaps:
        return None
    n = len(heatmaps)
    ncol = 2 if n > 1 else 1
    nrow = int(np.ceil(n / ncol))
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.3 * nrow), squeeze=False)
    for ax, (name, grid) in zip(axes.ravel(), heatmaps.items(), strict=False):
        g = np.ma.masked_invalid(grid)
        finite = grid[np.isfinite(grid)]
        vmin, vmax = (np.percentile(finite, [2, 98]) if finite.size else (0, 1))
        if vmin == vmax:
            pad = 0.1 * abs(vmin) if vmin else 1.0
            vmin, vmax = vmin - pad, vmax + pad
        cmap = plt.get_cmap("viridis").with_extremes(bad="#edf2f7")
        im = ax.imshow(g, cmap=cmap, vmin=vmin, vmax=vmax, aspect="equal", interpolation="nearest")
        if flagged:
            ax.scatter([c for _, c in flagged], [r for r, _ in flagged], marker="x", s=14, color=C_BAD, lw=1)
        ax.set_xticks(range(0, N_COLS, 2), [str(c + 1) for c in range(0, N_COLS, 2)], fontsize=6)
        ax.set_yticks(range(0, N_ROWS, 2), [ROWS[r] for r in range(0, N_ROWS, 2)], fontsize=6)
        ax.add_patch(plt.Rectangle((0.5, 0.5), N_COLS - 2, N_ROWS - 2, fill=False, ec="w", lw=0.8, ls="--"))
        for sp in ax.spines.values():
            sp.set_visible(False)
        ax.set_title(name, fontsize=8)
        fig.colorbar(im, ax=ax, fraction=0.03, pad=0.02)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    flag_txt = "; red x: flagged site" if len(flagged) else ""
    fig.suptitle(f"{title}: plate maps (dashed box: interior wells; grey: no data{flag_txt})"
                 + (f"\n{subtitle}" if subtitle else ""), fontsize=9, y=0.99 if subtitle else 0.97)
    fig.subplots_adjust(wspace=0.05, hspace=0.45, top=0.86 if subtitle else 0.88)
    return to_uri(fig)


def illum_plot(illum: Mapping[str, Mapping[str, Any]], title: str) -> str | None:
    if not illum:
        return None
    n = len(illum)
    fig, axes = plt.subplots(1, n, figsize=(2.1 * n + 0.6, 2.3), squeeze=False)
    lo = min(v["min"] for v in illum.values())
    hi = max(v["max"] for v in illum.values())
    im = None
    for ax, (ch, v) in zip(axes[0], illum.items(), strict=True):
        im = ax.imshow(v["image"], cmap="magma", vmin=lo, vmax=hi, interpolation="bilinear")
        ax.set_title(f"{ch}\n{v['min']:.2f}-{v['max']:.2f}", fontsize=8)
        ax.axis("off")
    if im is not None:
        fig.colorbar(im, ax=list(axes[0]), fraction=0.02, pad=0.02, label="relative illumination")
    fig.suptitle(f"{title}: illumination correction functions (mean 1)", fontsize=9, y=1.05)
    return to_uri(fig)


def _norm(img: np.ndarray) -> np.ndarray:
    lo, hi = np.percentile(img, [1, 99.5])
    return np.clip((img - lo) / max(hi - lo, 1e-9), 0, 1)


def overlay_plot(ov: Mapping[str, Any], title: str) -> str | None:
    if not ov:
        return None
    from skimage.segmentation import find_boundaries

    imgs = ov["images"]
    shape = next(iter(imgs.values())).shape
    rgb = np.zeros((*shape, 3))
    if ov["cells_channel"] in imgs:
        rgb[..., 1] = 0.8 * _norm(imgs[ov["cells_channel"]])
    if ov["nuclei_channel"] in imgs:
        rgb[..., 2] = _norm(imgs[ov["nuclei_channel"]])
        rgb[..., 0] += 0.15 * _norm(imgs[ov["nuclei_channel"]])
    fig, axes = plt.subplots(1, 2, figsize=(7.4, 3.8))
    axes[0].imshow(rgb)
    axes[0].set_title(f"{ov['nuclei_channel']} (blue) + {ov['cells_channel']} (green)")
    seg = rgb.copy()
    if ov["cells"] is not None and ov["cells"].shape == shape:
        seg[find_boundaries(ov["cells"], mode="inner")] = (1.0, 0.85, 0.1)
    if ov["nuclei"].shape == shape:
        seg[find_boundaries(ov["nuclei"], mode="inner")] = (1.0, 0.2, 0.6)
    axes[1].imshow(seg)
    n_c = f", {ov['n_cells']} cells (yellow)" if ov["n_cells"] is not None else ""
    axes[1].set_title(f"{ov['n_nuclei']} nuclei (magenta){n_c}")
    for ax in axes:
        ax.axis("off")
    fig.suptitle(f"{title}: segmentation of {ov['well']} site {ov['site']}", fontsize=9)
    fig.subplots_adjust(wspace=0.05)
    return to_uri(fig)


def funnel_plot(rna: pd.DataFrame, paint: pd.DataFrame) -> str | None:
    panels = [(t, d) for t, d in (("RNA", rna), ("Cell Painting", paint)) if d is not None and not d.empty]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 2.4), squeeze=False)
    for ax, (title, d) in zip(axes[0], panels, strict=True):
        y = np.arange(len(d))
        ax.barh(y, d["count"].astype(float), color=C_MAIN if title == "RNA" else C_ALT)
        ax.set_xscale("log")
        ax.set_yticks(y, d["stage"], fontsize=7)
        ax.invert_yaxis()
        for yi, v in zip(y, d["count"], strict=True):
            ax.annotate(f"{int(v):,}", (v, yi), xytext=(3, 0), textcoords="offset points", va="center",
                        fontsize=7)
        ax.set_title(f"{title}: counts through each stage")
        ax.set_xlim(right=float(d["count"].max()) * 8)
    fig.subplots_adjust(wspace=0.6)
    return to_uri(fig)
