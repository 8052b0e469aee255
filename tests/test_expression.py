"""The one log1p CP10k and the usable-cells rule (pairedscreen.expression), against a dense reference."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from pairedscreen.expression import log1p_cp10k, row_blocks, usable_cells


def _counts(seed: int = 0, n: int = 300, g: int = 50) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    x = rng.negative_binomial(2, 0.6, size=(n, g)).astype(np.int32)
    x[5] = 0                                          # an empty cell stays 0, no division by zero
    return sp.csr_matrix(x)


def test_log1p_cp10k_matches_dense_formula():
    x = _counts()
    dense = x.toarray().astype(np.float64)
    tot = dense.sum(axis=1, keepdims=True)
    ref = np.log1p(np.divide(dense * 1e4, tot, out=np.zeros_like(dense), where=tot > 0))
    got = log1p_cp10k(x)
    assert sp.issparse(got) and got.dtype == np.float64
    np.testing.assert_allclose(got.toarray(), ref, rtol=1e-13, atol=0)
    assert not got[5].toarray().any()


def test_inplace_is_bit_identical_and_blockwise(monkeypatch):
    x = _counts(1)
    expected = log1p_cp10k(x).toarray()
    xf = sp.csr_matrix(x, dtype=np.float64)
    assert len(list(row_blocks(xf.indptr, max_nnz=64))) > 10     # the in-place path works block by block
    import pairedscreen.expression as E
    monkeypatch.setattr(E, "BLOCK_NNZ", 64)
    seen = []
    real = E.row_blocks
    monkeypatch.setattr(E, "row_blocks", lambda indptr: seen.extend(real(indptr)) or iter(seen))
    out = log1p_cp10k(xf, inplace=True)
    assert len(seen) > 10
    assert out is xf
    np.testing.assert_array_equal(xf.toarray(), expected)
    with pytest.raises(TypeError):
        log1p_cp10k(x, inplace=True)                            # int counts: a copy is needed


def test_row_blocks_cover_every_row_once():
    x = _counts(2, n=97)
    blocks = list(row_blocks(x.indptr, max_nnz=100))
    assert blocks[0][0] == 0 and blocks[-1][1] == x.shape[0]
    assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))
    assert all(x.indptr[e] - x.indptr[s] <= 100 or e - s == 1 for s, e in blocks)


def test_usable_cells_rule():
    obs = pd.DataFrame({"perturbation": ["A", "B", "multiple", "unassigned", "A", "nan", "C"],
                        "pass_qc": [True, True, True, True, False, True, True],
                        "predicted_doublet": [False, True, False, False, False, False, False]})
    cells = ad.AnnData(obs=obs.set_axis([f"c{i}" for i in range(len(obs))]))
    assert usable_cells(cells).tolist() == [True, False, False, False, False, False, True]
    assert usable_cells(cells, categories=["A", "B"]).tolist() == [True] + [False] * 6
