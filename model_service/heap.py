"""The garbage collector and a long-lived server process: freeze what lives for the process's life.

Measured (2026-12-07, `make bench-tails` and gc callbacks in each process, 2 cores): a request worker
holds about 364k objects after loading mlflow, pandas, scikit-learn and the model. The objects of
100-record requests that outlive two young collections pushed a full (generation 2) collection every
1-3 s, each 80-400 ms with the GIL held, in every worker: that was the 100-record p99 (250-360 ms
against a p50 of 31 ms). The writer process did the same every ~1.3 s (85-120 ms each). Frozen into
the collector's permanent generation, those objects are no longer walked: a full collection sees only
what the requests left.
"""

from __future__ import annotations

import gc
import time


def settle_heap() -> float:
    """Collect once, then freeze every object alive now; the seconds it took. Called after each model
    load (the previous model's objects are thawed and collected first: one full collection per reload)
    and by the writer process before it starts moving segments."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - started
