"""Train the shipped Cellpose 3 segmentation models from scratch on simulated sites.

``train_segmentation(sim_dir, out_dir, "nuclei" | "cells", n_epochs, seed)`` reads a simulator working
directory (``pairedscreen.simulate.simulate``): images ``raw/images/{plate}/{well}_s{site}_w{channel}.tif``
and true masks ``truth/paint/{plate}/{well}_s{site}_{nuclei|cells}.tif``, builds the same two-channel
inputs that :func:`pairedscreen.paint.segment.segment_sites` feeds the models (nuclei: ``[DNA, 0]``,
cells: ``[AGP, DNA]``; raw, i.e. with the planted vignetting as a free augmentation), and trains a
``CellposeModel(pretrained_model=False)`` network (random initialisation, no downloaded weights).

The network's ``diam_mean`` is set to the mean object diameter of the training masks, so the config's
``diameter`` (12 / 26 px for simulated nuclei / cells) means "no rescaling" and other data sets rescale
to the training size. Training crops are ``bsize`` px (default 128; the network is fully convolutional
and evaluates 224 px tiles). One epoch is ``nimg_per_epoch`` images (default 8 = one optimiser step
with ``batch_size`` 8), so ``n_epochs`` is the number of optimiser steps.

Reproducibility: ``torch.manual_seed(seed)`` before the network is built (initial weights),
``torch.use_deterministic_algorithms(True)``, Cellpose reseeds numpy per epoch; the thread count is
recorded (float reductions may differ across thread counts). Output: ``{out_dir}/pairedscreen_{compartment}``
(a Cellpose model file, loadable with ``CellposeModel(pretrained_model=path)``) and
``pairedscreen_{compartment}.json`` (training data spec, seed, steps, losses, versions, sha256).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import tifffile
import yaml

from pairedscreen.errors import MissingInputError
from pairedscreen.io import atomic_output, sha256sum, write_json

log = logging.getLogger(__name__)

COMPARTMENT_CHANNELS = {"nuclei": ("DNA", None), "cells": ("AGP", "DNA")}
_STEM = re.compile(r"^(?P<well>[A-Z]+\d+)_s(?P<site>\d+)_(?P<comp>nuclei|cells)\.tif$")


def _channel_map(sim_dir: Path) -> dict[str, int]:
    cfg_path = sim_dir / "config" / "config.yaml"
    if cfg_path.exists():
        cfg = yaml.safe_load(cfg_path.read_text())
        ch = (cfg or {}).get("paint", {}).get("channels")
        if ch:
            return {str(k): int(v) for k, v in ch.items()}
    return {"DNA": 1, "ER": 2, "RNA": 3, "AGP": 4, "Mito": 5}


def load_training_set(
    sim_dir: str | os.PathLike, compartment: str
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """Images ``[H, W, 2]`` float32, true label images and site keys (``plate/well_sN``), sorted."""
    if compartment not in COMPARTMENT_CHANNELS:
        raise ValueError(f"compartment must be one of {sorted(COMPARTMENT_CHANNELS)}, got {compartment!r}")
    sim_dir = Path(sim_dir)
    truth_root = sim_dir / "truth" / "paint"
    if not truth_root.is_dir():
        raise FileNotFoundError(f"{truth_root} not found: {sim_dir} is not a simulator output directory")
    chmap = _channel_map(sim_dir)
    main, second = COMPARTMENT_CHANNELS[compartment]
    images, labels, keys = [], [], []
    for plate_dir in sorted(p for p in truth_root.iterdir() if p.is_dir()):
        for mask_file in sorted(plate_dir.iterdir()):
            m = _STEM.match(mask_file.name)
            if not m or m.group("comp") != compartment:
                continue
            stem = f"{m.group('well')}_s{m.group('site')}"
            img_dir = sim_dir / "raw" / "images" / plate_dir.name
            a = tifffile.imread(img_dir / f"{stem}_w{chmap[main]}.tif").astype(np.float32)
            b = (tifffile.imread(img_dir / f"{stem}_w{chmap[second]}.tif").astype(np.float32)
                 if second else np.zeros_like(a))
            images.append(np.stack([a, b], axis=-1))
            labels.append(tifffile.imread(mask_file).astype(np.int32))
            keys.append(f"{plate_dir.name}/{stem}")
    if not images:
        raise FileNotFoundError(f"no {compartment} truth masks under {truth_root}")
    return images, labels, keys


def mean_diameter(labels: list[np.ndarray]) -> float:
    """Mean of Cellpose's per-image median equivalent-circle diameter."""
    from cellpose import utils

    d = [utils.diameters(lbl)[0] for lbl in labels if lbl.max() > 0]
    return float(np.mean(d))


def train_segmentation(
    sim_dir: str | os.PathLike,
    out_dir: str | os.PathLike,
    compartment: str,
    n_epochs: int = 300,
    seed: int = 0,
    *,
    nimg_per_epoch: int = 8,
    batch_size: int = 8,
    learning_rate: float = 0.005,
    weight_decay: float = 1e-5,
    bsize: int = 128,
    n_test: int = 4,
    save_every: int = 25,
    threads: int | None = None,
) -> Path:
    """Train one compartment's model from scratch; return the model file path (see module docstring)."""
    import cellpose
    import torch
    from cellpose import models
    from cellpose import train as cp_train

    if bsize % 16:
        raise ValueError(f"bsize must be a multiple of 16, got {bsize}")
    sim_dir, out_dir = Path(sim_dir), Path(out_dir)
    images, labels, keys = load_training_set(sim_dir, compartment)
    n_test = min(n_test, max(0, len(images) - 8))
    train_x, train_y = images[n_test:], labels[n_test:]
    test_x, test_y = (images[:n_test], labels[:n_test]) if n_test else (None, None)
    diam = mean_diameter(train_y)

    if threads:
        torch.set_num_threads(int(threads))
    torch.manual_seed(seed)
    np.random.seed(seed)
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    model = models.CellposeModel(gpu=False, pretrained_model=False, model_type=None, diam_mean=diam,
                                 nchan=2, mkldnn=False)
    name = f"pairedscreen_{compartment}"
    t0 = time.time()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / f".{name}.training"  # Cellpose writes checkpoints here (every save_every epochs)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    try:
        path, train_losses, test_losses = cp_train.train_seg(
            model.net, train_data=train_x, train_labels=train_y, test_data=test_x, test_labels=test_y,
            channels=None, channel_axis=-1, normalize=True, batch_size=batch_size,
            learning_rate=learning_rate, weight_decay=weight_decay, n_epochs=n_epochs,
            nimg_per_epoch=nimg_per_epoch, save_path=work, save_every=save_every, model_name=name,
            rescale=True, bsize=bsize, min_train_masks=1,
        )
    finally:
        torch.use_deterministic_algorithms(deterministic_before)
    elapsed = time.time() - t0
    target = out_dir / name
    with atomic_output(target) as part:
        shutil.copyfile(path, part)
    shutil.rmtree(work, ignore_errors=True)
    steps = int(n_epochs * int(np.ceil(nimg_per_epoch / batch_size)))
    sidecar = {
        "model": name,
        "compartment": compartment,
        "architecture": "Cellpose 3 CPnet (nbase [2, 32, 64, 128, 256]), random initialisation",
        "pretrained_model": None,
        "inputs": {"channels": list(c for c in COMPARTMENT_CHANNELS[compartment] if c),
                   "layout": "[H, W, 2]: main channel, nuclear channel or zeros; Cellpose 1-99 percentile "
                             "normalisation per image and channel"},
        "diam_mean": diam,
        "training_data": {
            "sim_dir": str(sim_dir),
            "spec": _read_spec(sim_dir),
            "n_train_images": len(train_x),
            "n_test_images": n_test,
            "image_shape": list(images[0].shape),
            "n_train_objects": int(sum(int(len(np.unique(y))) - 1 for y in train_y)),
            "sites": keys,
        },
        "seed": seed,
        "n_epochs": n_epochs,
        "nimg_per_epoch": nimg_per_epoch,
        "batch_size": batch_size,
        "optimizer_steps": steps,
        "optimizer": "AdamW",
        "learning_rate": learning_rate,
        "weight_decay": weight_decay,
        "bsize": bsize,
        "train_loss_first_last": [float(train_losses[0]), float(train_losses[-1])],
        "test_losses": {str(i): float(v) for i, v in enumerate(test_losses) if v},
        "training_seconds": round(elapsed, 1),
        "torch_threads": torch.get_num_threads(),
        "versions": {"cellpose": cellpose.version, "torch": torch.__version__, "numpy": np.__version__,
                     "python": platform.python_version()},
        "sha256": sha256sum(target),
    }
    write_json(sidecar, out_dir / f"{name}.json")
    log.info("trained %s in %.0f s (%d steps): %s", name, elapsed, steps, target)
    return target


def _read_spec(sim_dir: Path) -> Any:
    p = sim_dir / "truth" / "spec.json"
    return json.loads(p.read_text()) if p.exists() else None


def main(argv: list[str] | None = None) -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sim_dir")
    ap.add_argument("out_dir")
    ap.add_argument("compartment", choices=sorted(COMPARTMENT_CHANNELS))
    ap.add_argument("--n-epochs", type=int, default=300)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--bsize", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--save-every", type=int, default=25)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    path = train_segmentation(args.sim_dir, args.out_dir, args.compartment, args.n_epochs, args.seed,
                              bsize=args.bsize, batch_size=args.batch_size, threads=args.threads,
                              save_every=args.save_every)
    print(path)


if __name__ == "__main__":
    main()


# The recipe of the models shipped in resources/models/ (their JSON sidecars record the same values).
# The training screen pins the perturbation classes the demo preset had when the models were trained
# (the preset later planted more shared-program perturbations), so retraining stays byte-identical.
SHIPPED_RECIPE: dict[str, Any] = {"sim_preset": "demo", "sim_seed": 101, "seed": 1, "n_epochs": 76,
                                  "threads": 1, "bsize": {"nuclei": 96, "cells": 112},
                                  "sim_overrides": {"classes": {"both": 2, "rna": 2, "paint": 2,
                                                                "neither": 2}}}


def train_shipped(out_dir: str | os.PathLike, work_dir: str | os.PathLike,
                  compartments: tuple[str, ...] = ("nuclei", "cells"), n_epochs: int | None = None,
                  seed: int | None = None) -> list[Path]:
    """Re-create the shipped demo models: train each compartment from scratch with :data:`SHIPPED_RECIPE`
    (overridable epochs/seed) on the training screen in ``work_dir``, simulated with the recipe's
    ``sim_*`` settings (``pairedscreen train-segmentation`` does that first; the paint arm never imports
    the simulator)."""
    r = SHIPPED_RECIPE
    sim = Path(work_dir)
    if not (sim / "truth").exists():
        raise MissingInputError(
            f"{sim}: no simulated training screen (truth/ missing). Fix: run `pairedscreen "
            f"train-segmentation --work-dir {sim}`, which simulates it, or simulate preset "
            f"{r['sim_preset']!r} with seed {r['sim_seed']} and overrides {r['sim_overrides']} into it")
    return [train_segmentation(sim, out_dir, comp, n_epochs=n_epochs or r["n_epochs"],
                               seed=r["seed"] if seed is None else seed, bsize=r["bsize"][comp],
                               threads=r["threads"])
            for comp in compartments]
