"""The correction chain (:mod:`pairedscreen.paint.correct`) on two real JUMP CRISPR plates, each step against
its reference tool called directly on the step's own input.

Data: ``jump_cpg0016_mandatory_features/CP-CC9-R1-04`` and ``CP-CC9-R2-04`` (source_13, jump-profiling-
recipe's test fixtures; 382 and 384 wells, 3 float32 features ``Cells_AreaShape_Zernike_5_1/5_3/5_5``).
The two plates come from two runs (``20220914_Run1``, ``20221009_Run2``, the recipe's folder names; R1/R2 in
the plate names): the runs are the batches (``Metadata_Batch``).

The files carry no perturbation labels, controls or cell counts, so:

- every well is the reference set: each plate is normalised to all of its wells (``Metadata_IsControl``
  true everywhere) and sphering is fitted on all wells of both plates; one label (``unlabelled``) stands in
  for the perturbation column the sphering stage samples by, so no candidate has a replicate mAP and one
  regularisation is given (the stage then applies it: its record says so);
- cell-count regression cannot be tested on these plates (no cell counts): it is tested against numpy's
  least squares on the simulated screen (``tests/test_correct.py``).

Checks, each on the same run of the chain (normalisation, then ``sphering``, ``harmony``, ``pca``, the
profiles before the chain and after each step read back from ``profiles_steps/``):

- normalisation = the recipe's "mad" formula per plate and feature, (x - median) / (1.4826 MAD), on the
  raw plates;
- sphering = pycytominer's ``Spherize`` (ZCA-cor, same epsilon) fitted on the same wells;
- harmony = ``harmonypy.run_harmony`` called directly on the same PCs (sklearn PCA of the sphered wells),
  batch labels and seed;
- pca = sklearn PCA (full SVD, the configured variance share) fitted on the harmony output;
- batch predictability (:func:`pairedscreen.quality.batch.batch_predictability`, labels = the run) of the
  raw wells, before and after harmony, printed (``pytest -s``). Asserted: the raw wells are predictable
  (the runs differ) and harmony does not make the batches more predictable beyond the permutation null's
  noise. Normalising each plate (one plate per batch) already removes most of the run effect on these 3
  features, so no fall after harmony is asserted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pairedscreen import columns as C
from pairedscreen.config import resolve_section
from pairedscreen.paint import correct as K
from pairedscreen.paint.screen_profiles import write_profiles
from pairedscreen.quality.batch import batch_predictability

FOLDER = "jump_cpg0016_mandatory_features"
PLATES = {"CP-CC9-R1-04": "20220914_Run1", "CP-CC9-R2-04": "20221009_Run2"}   # plate -> run (batch)
STEPS = ["sphering", "harmony", "pca"]
EPSILON = 0.01
SEED = 0
N_PERMUTATIONS = 200


def _plates(folder: Path) -> list[pd.DataFrame]:
    tables = []
    for plate, run in PLATES.items():
        df = pd.read_parquet(folder / f"{plate}.trimmed.parquet")
        assert df[C.PLATE].unique().tolist() == [plate]
        df[C.BATCH] = run
        df[C.IS_CONTROL] = True
        df[C.PERT] = "unlabelled"
        tables.append(df)
    return tables


@pytest.fixture(scope="module")
def chain(shared_data, tmp_path_factory) -> dict:
    """The plates, the resolved config and the profiles before the chain and after each step."""
    tables = _plates(shared_data(FOLDER))
    tmp = tmp_path_factory.mktemp("jump_chain")
    params = resolve_section("profiles", {"correct": STEPS, "correct_seed": SEED,
                                          "sphering": {"regularisations": [EPSILON]}})
    out = tmp / "profiles.parquet"
    info = write_profiles(tables, out, tmp / "consensus.parquet", registry=None,
                          normalize=params["normalize"], feature_select=[], outlier_cutoff=500,
                          position_correction=False, blocklist=None, correct=STEPS, correct_params=params)
    steps = {name: pd.read_parquet(path) for name, path in K.step_tables(out)}
    return {"raw": pd.concat(tables, ignore_index=True), "params": params, "info": info, "steps": steps}


def _features(df: pd.DataFrame) -> np.ndarray:
    return df[C.feature_columns(df)].to_numpy(np.float64)


def test_chain_ran_on_both_plates(chain):
    assert [r["step"] for r in chain["info"]["correction"]] == STEPS
    assert list(chain["steps"]) == ["input", *STEPS]
    for df in chain["steps"].values():
        assert len(df) == 382 + 384
        assert df[C.PLATE].tolist() == chain["raw"][C.PLATE].tolist()
        assert df[C.WELL].tolist() == chain["raw"][C.WELL].tolist()


def test_normalisation_is_the_recipes_mad_formula_per_plate(chain):
    raw, norm = chain["raw"], chain["steps"]["input"]
    assert chain["params"]["normalize"] == "mad_robustize"
    feats = C.feature_columns(raw)
    assert C.feature_columns(norm) == feats
    expected = np.empty((len(raw), len(feats)))
    for _, idx in raw.groupby(C.PLATE, sort=False).indices.items():
        x = raw[feats].to_numpy(np.float64)[idx]
        med = np.median(x, axis=0)
        mad = np.median(np.abs(x - med), axis=0)
        expected[idx] = (x - med) / (1.4826 * mad)
    np.testing.assert_allclose(_features(norm), expected, rtol=1e-5, atol=1e-5)
    # each plate normalised to its reference wells: here every well (all are marked controls)
    assert chain["info"]["normalization_reference"] == {p: "controls" for p in PLATES}


def test_sphering_is_pycytominer_spherize_fitted_on_all_wells(chain):
    from pycytominer.operations import Spherize

    before, after = chain["steps"]["input"], chain["steps"]["sphering"]
    x = before[C.feature_columns(before)].astype(np.float64)
    method = chain["params"]["sphering"]["method"]
    assert method == "ZCA-cor"
    ref = Spherize(epsilon=EPSILON, method=method).fit(x).transform(x).to_numpy(np.float64)
    np.testing.assert_allclose(_features(after), ref, atol=2e-4, rtol=1e-4)
    rec = chain["info"]["correction"][0]
    assert rec["epsilon"] == EPSILON and rec["method"] == method and rec["n_fit_wells"] == len(x)
    assert not np.allclose(ref, x.to_numpy(), atol=0.05)       # sphering changed the wells
    # ZCA-cor whitening of the fitted wells: near-identity correlation (epsilon regularises it)
    np.testing.assert_allclose(np.corrcoef(_features(after), rowvar=False), np.eye(ref.shape[1]), atol=0.05)


def _pcs(chain) -> tuple[np.ndarray, int]:
    """The PCs the harmony step corrects: sklearn PCA of the sphered wells (all wells fit it)."""
    from sklearn.decomposition import PCA

    x = _features(chain["steps"]["sphering"])
    n = min(chain["params"]["harmony"]["n_pcs"], x.shape[1])
    return PCA(n_components=n, svd_solver="full", random_state=SEED).fit(x).transform(x), n


def test_harmony_is_harmonypy_on_the_same_pcs(chain):
    import harmonypy

    pcs, n = _pcs(chain)
    batches = chain["steps"]["sphering"][C.BATCH].astype(str)
    assert sorted(set(batches)) == sorted(PLATES.values())
    opts = chain["params"]["harmony"]
    ho = harmonypy.run_harmony(pcs, pd.DataFrame({"batch": pd.Categorical(batches)}), "batch",
                               nclust=K.harmony_clusters(opts["nclust"], len(pcs)),
                               max_iter_harmony=opts["max_iter"], random_state=SEED, verbose=False)
    after = chain["steps"]["harmony"]
    assert C.feature_columns(after) == K.component_names("Harmony", n)
    np.testing.assert_allclose(_features(after), ho.Z_corr.T, atol=2e-4, rtol=1e-4)
    assert not np.allclose(ho.Z_corr.T, pcs, atol=0.01)        # harmony moved the wells
    rec = chain["info"]["correction"][1]
    assert rec["corrected"] and rec["n_batches"] == 2 and rec["iterations"] == len(ho.objective_harmony) - 1


def test_pca_is_sklearn_pca_of_the_harmony_output(chain):
    from sklearn.decomposition import PCA

    x = _features(chain["steps"]["harmony"])
    share = chain["params"]["pca"]["variance"]
    assert chain["params"]["pca"]["n_components"] is None
    ref = PCA(n_components=share, svd_solver="full", random_state=SEED).fit(x)
    after = chain["steps"]["pca"]
    assert C.feature_columns(after) == K.component_names("PCA", ref.n_components_)
    np.testing.assert_allclose(_features(after), ref.transform(x), atol=2e-4, rtol=1e-4)
    assert chain["info"]["correction"][2]["n_components"] == ref.n_components_


def test_batch_predictability_before_and_after_harmony(chain):
    runs = chain["raw"][C.BATCH].to_numpy()
    pcs, _ = _pcs(chain)
    tables = {"raw wells": _features(chain["raw"]), "normalised, sphered PCs (harmony's input)": pcs,
              "after harmony": _features(chain["steps"]["harmony"])}
    res = {k: batch_predictability(x, runs, n_permutations=N_PERMUTATIONS, seed=SEED)
           for k, x in tables.items()}
    for k, r in res.items():
        print(f"batch predictability by run, {k}: accuracy {r['accuracy']:.3f}, chance {r['chance']:.3f}, "
              f"p {r['p_value']:.4f} (n={r['n_samples']})")
    raw, before, after = res.values()
    assert raw["accuracy"] > 0.75 and raw["p_value"] < 0.01      # the runs differ before normalisation
    # the permutation null's spread: the noise of an accuracy on these wells
    noise = 3 * np.sqrt(0.25 / len(runs))
    assert after["accuracy"] <= before["accuracy"] + noise
