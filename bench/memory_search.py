"""Where FAISS beats plain matrix products for the episodic memory's nearest-question search.

``episodic_memory`` (rewards/memory.py) looks up, for every completion of a call, the K stored questions
nearest to its question. Both paths are exact (cosine on unit vectors): the matrix path multiplies the
queries by the stacked keys and sorts each row; the FAISS path builds an inner-product flat index and
searches it. Both pay for stacking the keys once per call. This measures both through the memory's own
``nearest`` at growing memory sizes, alternating the two paths, and reports the smallest size from which
FAISS is faster at every larger size measured (the ``faiss_above`` default).

    python bench/memory_search.py                      # ~1 min on 2 cores
    python bench/memory_search.py --queries 128 --k 4

Last line: ``faiss_threshold=<N> speedup_at_max=<x>`` (matrix time / FAISS time at the largest size).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RESULTS, environment, headline, median, write_json  # noqa: E402
from rewards.memory import KeyedMemory  # noqa: E402

SIZES = (64, 256, 1024, 2048, 4096, 8192, 16384)
DIM = 384  # all-MiniLM-L6-v2


def _unit(rows: int, rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal((rows, DIM)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def measure(size: int, queries: int, k: int, repeats: int, rng) -> dict[str, float]:
    keys = _unit(size, rng)
    memory = {
        name: KeyedMemory(capacity=size, faiss_above=above)
        for name, above in (("matrix", 1 << 40), ("faiss", 0))
    }
    for mem in memory.values():
        for i, vec in enumerate(keys):
            mem.add(f"q{i}", vec, vec)
    q = _unit(queries, rng)
    assert memory["matrix"].nearest(q, k) == memory["faiss"].nearest(q, k)  # the same answer, exact search
    seconds: dict[str, list[float]] = {"matrix": [], "faiss": []}
    for _ in range(repeats):
        for name in ("matrix", "faiss"):  # alternating: drift on a busy machine hits both
            start = time.perf_counter()
            memory[name].nearest(q, k)
            seconds[name].append(time.perf_counter() - start)
    return {f"{name}_ms": 1000 * median(values) for name, values in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--queries", type=int, default=64, help="completions per call (a gathered batch)")
    parser.add_argument("--k", type=int, default=1, help="nearest questions per query (the paper's K)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--out", default=str(RESULTS / "memory_search.json"))
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    for size in SIZES:
        row = {"size": size, **measure(size, args.queries, args.k, args.repeats, rng)}
        row["matrix_over_faiss"] = row["matrix_ms"] / row["faiss_ms"]
        rows.append(row)
        print(
            f"size={size:6d}  matrix={row['matrix_ms']:8.2f} ms  faiss={row['faiss_ms']:8.2f} ms  ratio={row['matrix_over_faiss']:.2f}"
        )
    threshold = SIZES[-1]
    for row in reversed(rows):  # the smallest size from which FAISS wins everywhere above
        if row["matrix_over_faiss"] <= 1.0:
            break
        threshold = row["size"]
    figures = {"faiss_threshold": threshold, "speedup_at_max": rows[-1]["matrix_over_faiss"]}
    write_json(
        args.out,
        {"settings": vars(args), "rows": rows, **figures, "environment": environment()},
    )
    print(headline(figures))


if __name__ == "__main__":
    main()
