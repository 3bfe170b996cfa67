"""Sparse connectivity: index and weight arrays for large recurrent networks.

`Synapses` stores the connections from ``n_sources`` to ``n_targets`` neurons twice: by
source in fixed-size blocks (the out-going synapses of ``s`` fill the rows
``first_block[s]`` to ``first_block[s + 1] - 1`` of ``targets``/``weights``, at least one;
the last is padded with target ``n_targets``, a sink no neuron reads, and weight 0), which
is how a spike is pushed to its targets; and by target (row ``j`` of
``sources``/``source_weights``: the in-coming synapses of ``j``, padded with source
``n_sources``), which is how one neuron pulls the spikes it hears. Blocks rather than rows
padded to the largest out-degree: pushing a spike costs its own out-degree, rounded up to
a block (on the balanced benchmark network, 1.16 entries per synapse instead of 1.5).
Memory is about ``n_synapses + n_sources * block + n_targets * max_in_degree``. Repeated
pairs (source, target) are merged into one synapse with the summed weight (they arrive
together, so this is exact).

Build it from what you have: `Synapses.from_in_degree` (``[n_targets, K]`` source
indices, the fixed-in-degree form), `Synapses.from_csr` (general CSR by source) or
`Synapses.from_dense`. Construction runs in NumPy on concrete arrays, once.
"""

from __future__ import annotations

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int


class Synapses(eqx.Module):
    """Synapses from ``n_sources`` to ``n_targets`` neurons, by source (blocks) and by target.

    Attributes:
        targets: ``[n_blocks, block]`` int32 target of each synapse, by source in blocks;
            padding entries hold ``n_targets``.
        weights: ``[n_blocks, block]`` jump of the target's synaptic current; 0 in padding
            entries.
        first_block: ``[n_sources + 1]`` int32: the blocks of source ``s`` are rows
            ``first_block[s]`` to ``first_block[s + 1] - 1`` (at least one per source).
        sources: ``[n_targets, max_in_degree]`` int32 source of each synapse, by target;
            padding entries hold ``n_sources``.
        source_weights: ``[n_targets, max_in_degree]`` the same weights, by target.
        n_targets: number of target neurons (static).
        n_synapses: number of real (non-padding) synapses (static).
    """

    targets: Int[Array, "blocks block"]
    weights: Float[Array, "blocks block"]
    first_block: Int[Array, " src_plus_1"]
    sources: Int[Array, "tgt in"]
    source_weights: Float[Array, "tgt in"]
    n_targets: int = eqx.field(static=True)
    n_synapses: int = eqx.field(static=True)

    @property
    def n_sources(self) -> int:
        return self.first_block.shape[0] - 1

    @classmethod
    def from_csr(cls, indptr, indices, weights, n_targets: int, dtype=None) -> Synapses:
        """General CSR by source: the synapses of source ``s`` are
        ``indices[indptr[s]:indptr[s+1]]`` (targets) with ``weights[...]``.

        Args:
            indptr: ``[n_sources + 1]`` non-decreasing offsets starting at 0.
            indices: ``[nnz]`` target of each synapse, in ``[0, n_targets)``.
            weights: ``[nnz]`` weights, or a scalar for all.
            n_targets: number of target neurons.
        """
        indptr = np.asarray(indptr)
        indices = np.asarray(indices)
        if indptr.ndim != 1 or indptr.size < 2:
            raise ValueError(
                f"indptr must have shape [n_sources + 1] with n_sources >= 1, "
                f"got shape {indptr.shape}."
            )
        if indptr[0] != 0 or np.any(np.diff(indptr) < 0):
            raise ValueError("indptr must start at 0 and never decrease (CSR row offsets).")
        nnz = int(indptr[-1])
        if indices.shape != (nnz,):
            raise ValueError(
                f"indices must have shape [indptr[-1]] = ({nnz},), got {indices.shape}."
            )
        if not (isinstance(n_targets, (int, np.integer)) and n_targets >= 1):
            raise ValueError(f"n_targets must be a positive integer, got {n_targets!r}.")
        if nnz and (indices.min() < 0 or indices.max() >= n_targets):
            bad = int(np.argmax((indices < 0) | (indices >= n_targets)))
            raise ValueError(
                f"indices must be target neurons in [0, {n_targets - 1}] "
                f"(got {int(indices[bad])} at index {bad})."
            )
        w = np.broadcast_to(np.asarray(weights, dtype=float), (nnz,))
        if not np.all(np.isfinite(w)):
            raise ValueError("weights must be finite (no NaN or inf).")
        n_src = indptr.size - 1
        src = np.repeat(np.arange(n_src), np.diff(indptr))
        # Merge repeated (source, target) pairs: sort by (source, target), sum runs.
        key = src.astype(np.int64) * n_targets + indices
        order = np.argsort(key, kind="stable")
        key, w = key[order], w[order]
        if nnz:
            runs = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
            key, w = key[runs], np.add.reduceat(w, runs)
        src, tgt = key // n_targets, key % n_targets
        dtype = dtype if dtype is not None else float
        targets, weights, first_block = _blocked_rows(src, tgt, w, n_src, n_targets)
        sources, source_weights = _padded_rows(tgt, src, w, n_targets, n_src)
        return cls(
            jnp.asarray(targets),
            jnp.asarray(weights, dtype=dtype),
            jnp.asarray(first_block),
            jnp.asarray(sources),
            jnp.asarray(source_weights, dtype=dtype),
            int(n_targets),
            int(src.size),
        )

    @classmethod
    def from_in_degree(cls, sources, weights, n_sources: int, dtype=None) -> Synapses:
        """Fixed in-degree: target ``j`` receives from ``sources[j, k]`` with ``weights[j, k]``.

        Args:
            sources: ``[n_targets, K]`` source index of each synapse, in ``[0, n_sources)``.
            weights: ``[n_targets, K]`` weights (or anything that broadcasts to it).
            n_sources: number of source neurons.
        """
        sources = np.asarray(sources)
        if sources.ndim != 2:
            raise ValueError(
                f"sources must have shape [n_targets, K] (K synapses per target), "
                f"got shape {sources.shape}."
            )
        if not (isinstance(n_sources, (int, np.integer)) and n_sources >= 1):
            raise ValueError(f"n_sources must be a positive integer, got {n_sources!r}.")
        if sources.size and (sources.min() < 0 or sources.max() >= n_sources):
            raise ValueError(f"sources must be neuron indices in [0, {n_sources - 1}].")
        w = np.broadcast_to(np.asarray(weights, dtype=float), sources.shape)
        n_tgt = sources.shape[0]
        src = sources.ravel()
        tgt = np.repeat(np.arange(n_tgt), sources.shape[1])
        order = np.argsort(src, kind="stable")
        indptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n_sources))])
        return cls.from_csr(indptr, tgt[order], w.ravel()[order], n_tgt, dtype)

    @classmethod
    def from_dense(cls, weights, dtype=None) -> Synapses:
        """``weights[s, j]``: source ``s`` to target ``j``; zeros are not synapses."""
        w = np.asarray(weights, dtype=float)
        if w.ndim != 2:
            raise ValueError(f"weights must have shape [n_sources, n_targets], got {w.shape}.")
        nz = w != 0
        indptr = np.concatenate([[0], np.cumsum(nz.sum(axis=1))])
        return cls.from_csr(indptr, np.nonzero(nz)[1], w[nz], w.shape[1], dtype)

    def to_dense(self) -> Float[Array, "src tgt"]:
        """``[n_sources, n_targets]`` weight matrix (summing repeated synapses)."""
        owner = jnp.repeat(
            jnp.arange(self.n_sources),
            jnp.diff(self.first_block),
            total_repeat_length=self.targets.shape[0],
        )
        rows = jnp.broadcast_to(owner[:, None], self.targets.shape)
        dense = jnp.zeros((self.n_sources, self.n_targets + 1), self.weights.dtype)
        return dense.at[rows, self.targets].add(self.weights)[:, : self.n_targets]


def _blocked_rows(row, col, w, n_rows: int, pad: int, block: int = 32):
    """Rows of a COO list, sorted by row, as blocks: ``(cols [n_blocks, b], vals, first)``
    with ``first [n_rows + 1]`` the first block of each row (every row at least one).
    ``b`` is `block`, or the smallest power of 2 that holds the longest row if less."""
    degree = np.bincount(row, minlength=n_rows)
    b = min(block, 1 << max(int(degree.max(initial=1)) - 1, 0).bit_length())
    n_blocks = np.maximum(-(-degree // b), 1)
    first = np.concatenate([[0], np.cumsum(n_blocks)]).astype(np.int32)
    starts = np.concatenate([[0], np.cumsum(degree)[:-1]])
    slot = first[row] * b + np.arange(row.size) - starts[row]  # flat position in the blocks
    cols = np.full(first[-1] * b, pad, np.int32)
    vals = np.zeros(first[-1] * b)
    cols[slot], vals[slot] = col, w
    return cols.reshape(-1, b), vals.reshape(-1, b), first


def _padded_rows(row, col, w, n_rows: int, pad: int):
    """Rows of a COO list as ``[n_rows, max_len]`` arrays padded with index `pad`, weight 0."""
    order = np.argsort(row, kind="stable")
    row, col, w = row[order], col[order], w[order]
    degree = np.bincount(row, minlength=n_rows)
    starts = np.concatenate([[0], np.cumsum(degree)[:-1]])
    pos = np.arange(row.size) - starts[row]
    width = max(int(degree.max()) if degree.size else 0, 1)
    cols = np.full((n_rows, width), pad, np.int32)
    vals = np.zeros((n_rows, width))
    cols[row, pos] = col
    vals[row, pos] = w
    return cols, vals


def balanced_ei(n: int, seed: int = 1, in_degree: int = 100, dtype=None):
    """The balanced E/I network of BENCHMARKS.md section 3, drawn exactly as specified.

    ``round(0.8 n)`` excitatory neurons first; each neuron receives ``0.8 K`` synapses from
    distinct random E neurons (``w = +0.2``) and ``0.2 K`` from distinct random I neurons
    (``w = -0.8``), never from itself; ``v_leak ~ U[1.05, 1.5]``. NumPy
    ``default_rng(seed)`` in the documented order, so another simulator given the same
    arrays runs the same network.

    Returns:
        ``(sources [n, K] int, weights [n, K], v_leak [n])`` as NumPy arrays: the
        fixed-in-degree form (`Synapses.from_in_degree`).
    """
    rng = np.random.default_rng(seed)
    n_e = int(round(0.8 * n))
    n_i = n - n_e
    k_e, k_i = int(round(0.8 * in_degree)), in_degree - int(round(0.8 * in_degree))
    if n_e - 1 < k_e or n_i - 1 < k_i:
        raise ValueError(f"n={n} is too small for in-degree {in_degree} without repeats.")
    v_leak = rng.uniform(1.05, 1.5, n)
    sources = np.empty((n, in_degree), np.int64)
    for j in range(n):
        e = rng.choice(n_e - (j < n_e), k_e, replace=False)
        if j < n_e:
            e[e >= j] += 1
        i = rng.choice(n_i - (j >= n_e), k_i, replace=False)
        if j >= n_e:
            i[i >= j - n_e] += 1
        sources[j, :k_e] = e
        sources[j, k_e:] = n_e + i
    weights = np.where(np.arange(in_degree) < k_e, 0.2, -0.8)
    weights = np.broadcast_to(weights, (n, in_degree)).astype(dtype or float)
    return sources, weights, v_leak
