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


# --------------------------------------------------------------------------------------------- paired


def map_plot(tab: pd.DataFrame) -> str | None:
    arms = [a for a in ("rna", "paint") if f"{a}_map" in tab]
    if not arms:
        return None
    d = tab[~flag(tab["is_control"])] if "is_control" in tab else tab
    d = d.assign(_order=d[[f"{a}_map" for a in arms]].astype(float).max(axis=1)).sort_values("_order")
    d = d.dropna(subset="_order")
    if d.empty:
        return None
    n = len(d)
    fig, ax = plt.subplots(figsize=(5.0, min(max(2.5, 0.16 * n + 1), 14) if n <= 80 else 4.0))
    y = np.arange(n)
    for a, off in zip(arms, (-0.15, 0.15), strict=False):
        m = d[f"{a}_map"].astype(float).to_numpy()
        act = flag(d[f"{a}_active"]).to_numpy() if f"{a}_active" in d else np.ones(n, bool)
        ax.scatter(m[act], y[act] + off, s=14, color=ARM_COLORS[a], label=f"{a} (significant)")
        ax.scatter(m[~act], y[~act] + off, s=14, facecolors="none", edgecolors=ARM_COLORS[a],
                   label=f"{a} (not significant)")
    if n <= 80:
        ax.set_yticks(y, d.perturbation_id.astype(str), fontsize=6)
    else:
        ax.set_ylabel("perturbations, ranked")
    ax.set(xlabel="replicate mAP", xlim=(-0.02, 1.02), title="Replicate retrieval (mAP) per perturbation")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return to_uri(fig)


def activity_scatter(tab: pd.DataFrame) -> tuple[str | None, str]:
    """RNA vs paint replicate mAP (the quality stage's) per perturbation."""
    cols = ["rna_map", "paint_map"]
    if not (set(cols) <= set(tab.columns) and tab[cols].notna().any().all()):
        return None, ""
    xcol, ycol, what = "rna_map", "paint_map", "replicate mAP"
    d = tab.dropna(subset=[xcol, ycol])
    fig, ax = plt.subplots(figsize=(4.2, 3.8))
    cls = d["truth_effect_class"].astype(str) if "truth_effect_class" in d else None
    if cls is not None:
        for c in sorted(cls.unique()):
            sel = cls == c
            ax.scatter(d.loc[sel, xcol], d.loc[sel, ycol], s=18, color=CLASS_COLORS.get(c, C_MUTED),
                       label=f"truth: {c}")
        ax.legend(loc="best")
    else:
        ctrl = flag(d["is_control"]) if "is_control" in d else pd.Series(False, d.index)
        ax.scatter(d.loc[~ctrl, xcol], d.loc[~ctrl, ycol], s=18, color=C_MAIN, label="perturbations")
        ax.scatter(d.loc[ctrl, xcol], d.loc[ctrl, ycol], s=18, color="k", marker="x", label="controls")
        ax.legend(loc="best")
    if len(d) <= 40:
        for r in d.itertuples():
            ax.annotate(str(r.perturbation_id), (getattr(r, xcol), getattr(r, ycol)), fontsize=5,
                        xytext=(2, 2), textcoords="offset points", color="#4a5568")
    ax.set(xlabel=f"RNA {what}", ylabel=f"Paint {what}", title="Activity: RNA vs Cell Painting")
    return to_uri(fig), what


def concordance_plot(conc: Mapping[str, Any]) -> str:
    fig, axes = plt.subplots(1, 3, figsize=(11.0, 3.6), layout="constrained")
    ids = conc["ids"]
    order = np.argsort(ids) if len(ids) > 1 else np.arange(len(ids))
    for ax, key, lab in ((axes[0], "sim_rna", "RNA"), (axes[1], "sim_paint", "Paint")):
        m = conc[key][np.ix_(order, order)]
        im = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
        ax.set_title(f"{lab}: cosine similarity")
        if len(ids) <= 40:
            labels = [ids[i] for i in order]
            ax.set_xticks(range(len(ids)), labels, rotation=90, fontsize=5)
            ax.set_yticks(range(len(ids)), labels, fontsize=5)
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(im, ax=axes[1], fraction=0.046, pad=0.04, label="cosine similarity")
    ax = axes[2]
    a, b = np.asarray(conc["pairs_rna"]), np.asarray(conc["pairs_paint"])
    if len(a) > MAX_SCATTER:  # the statistics use every pair; the picture a fixed random subset
        pick = np.random.default_rng(0).choice(len(a), MAX_SCATTER, replace=False)
        a, b = a[pick], b[pick]
    ax.scatter(a, b, s=4 if len(a) > 2000 else 10, color=C_MAIN, alpha=0.6)
    ax.axhline(0, color="k", lw=0.4)
    ax.axvline(0, color="k", lw=0.4)
    r = conc.get("mantel_r")
    stat = f"Mantel r {r:.2f} (p = {conc['mantel_p']:.3g})" if r is not None else "Mantel r: n/a (too few)"
    ax.set(xlabel="RNA similarity", ylabel="Paint similarity",
           title=f"{len(conc['pairs_rna'])} pairs: {stat}")
    return to_uri(fig)


def batch_plot(bt: pd.DataFrame) -> str | None:
    """Accuracy of predicting the batch from profiles, against chance, per feature set."""
    if bt is None or bt.empty or "accuracy" not in bt:
        return None
    d = bt.dropna(subset=["accuracy"])
    if d.empty:
        return None
    fig, ax = plt.subplots(figsize=(4.6, max(1.6, 0.45 * len(d) + 0.9)))
    y = np.arange(len(d))
    ax.barh(y, d["accuracy"].astype(float), height=0.6, color=C_MAIN, label="accuracy")
    if "chance" in d:
        ax.scatter(d["chance"].astype(float), y, marker="|", s=300, color=C_BAD, label="chance", zorder=3)
    labels = [f"{r.what}" + (f" (p={float(r.p_value):.2g})" if "p_value" in d and pd.notna(r.p_value) else "")
              for r in d.itertuples()]
    ax.set_yticks(y, labels, fontsize=7)
    ax.invert_yaxis()
    ax.set(xlim=(0, 1), xlabel="cross-validated accuracy", title="Batch predictability")
    ax.legend(loc="lower right")
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


def position_plot(pos: Mapping[str, Any]) -> str:
    fig, ax = plt.subplots(figsize=(4.6, 3.0))
    b, a = pos["before"], pos["after"]
    plates = sorted(set(b.plate) | set(a.plate))
    data, labels, colors = [], [], []
    for p in plates:
        for frame, lab, c in ((b, "before", C_MUTED), (a, "after", C_MAIN)):
            v = frame.loc[frame.plate == p, "r2"].to_numpy(float)
            data.append(v[np.isfinite(v)])
            labels.append(f"{p}\n{lab}")
            colors.append(c)
    bp = ax.boxplot(data, patch_artist=True, widths=0.6, showfliers=True, flierprops={"markersize": 2})
    ax.set_xticks(range(1, len(labels) + 1), labels, fontsize=6)
    for patch, c in zip(bp["boxes"], colors, strict=True):
        patch.set_facecolor(c)
    med = " -> ".join("n/a" if v is None else f"{v:.3f}" for v in (pos["median_before"], pos["median_after"]))
    ax.set(ylabel="adjusted R² of edge vs interior wells\n(per feature)",
           title=f"Plate-position effect: median R² {med}"
                 f"\n({pos['n_features']} features; position correction "
                 f"{'on' if pos['corrected'] else 'off'})")
    return to_uri(fig)


# ------------------------------------------------------------------------------------- training evals
def learning_curve_plot(lc: Mapping[str, Any]) -> str | None:
    """The evals' learning curves (``evals.json`` ``learning_curve``): held-out r against the fraction of
    the train perturbations and of the cells per perturbation, one line per direction, with the fitted
    log2 trend extrapolated to the next doubling (dashed)."""
    axes_keys = [("perturbations", "fraction of train perturbations"), ("cells", "fraction of cells per "
                                                                                 "perturbation")]
    have = [(k, lab) for k, lab in axes_keys
            if any(isinstance(lc.get(d), Mapping) and k in lc[d] for d in ("rna_to_paint", "paint_to_rna"))]
    if not have:
        return None
    fig, axs = plt.subplots(1, len(have), figsize=(4.2 * len(have), 3.2), squeeze=False)
    for ax, (key, label) in zip(axs[0], have, strict=True):
        for d, name in (("rna_to_paint", "RNA -> morphology"), ("paint_to_rna", "morphology -> RNA")):
            cur = (lc.get(d) or {}).get(key)
            if not cur:
                continue
            f = np.array([p["fraction"] for p in cur["points"]], float)
            r = np.array([np.nan if p["correlation"] is None else p["correlation"] for p in cur["points"]])
            line = ax.plot(f, r, "o-", label=name)[0]
            t = cur["trend"]["correlation"]
            if t.get("slope") is not None:
                xs = np.linspace(f.min(), 2 * f.max(), 20)
                top = cur["points"][-1]
                full = top["n_perturbations"] if key == "perturbations" else top["cells_fraction"]
                ax.plot(xs, t["intercept"] + t["slope"] * np.log2(xs / f.max() * full), "--",
                        color=line.get_color(), lw=1)
        ax.set_xlabel(label)
        ax.set_ylabel("held-out r")
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
    return to_uri(fig)
