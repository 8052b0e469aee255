"""Figures of the report's paired, quality and training sections (replicate mAP, activity, concordance,
batch, plate position, learning curve), each returned as a ``data:image/png;base64,...`` URI; the shared
style and :func:`~pairedscreen.report.plots.to_uri` come from :mod:`pairedscreen.report.plots`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from pairedscreen.report.inputs import flag
from pairedscreen.report.plots import (
    ARM_COLORS,
    C_BAD,
    C_MAIN,
    C_MUTED,
    CLASS_COLORS,
    MAX_SCATTER,
    plt,
    to_uri,
)

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
        notes = [(lc.get(d) or {}).get(key, {}).get("note") for d in ("rna_to_paint", "paint_to_rna")]
        if all(notes):          # no point on this axis: say so on the panel (the table has the reason)
            ax.text(0.5, 0.5, "not measured\n(see the table's reason)", transform=ax.transAxes,
                    ha="center", va="center", color="0.4")
        ax.set_xlabel(label)
        ax.set_ylabel("held-out r")
        ax.set_xscale("log", base=2)
        ax.legend(fontsize=7)
    return to_uri(fig)
