"""How far two models agree on the same records, without labels: the gate measures it between a
challenger and the champion on the test split, the post-promotion guard between a new champion and the
one it replaced on the new one's live traffic (scored again by the previous one).

- rank agreement: Spearman's rank correlation of the two scores (1: the same order; a model whose
  labels were flipped scores the records in about the reverse order, near -1);
- disagreement: the share of records whose decision differs, each model at its own threshold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import spearmanr


@dataclass(frozen=True)
class Agreement:
    n: int
    rank_agreement: float  # NaN: fewer than 2 records, or a constant score
    disagreement: float

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def agreement(new_scores, old_scores, new_threshold: float, old_threshold: float) -> Agreement:
    """The two models' agreement on the same records (scores in the same order)."""
    new = np.asarray(new_scores, dtype=float)
    old = np.asarray(old_scores, dtype=float)
    if new.shape != old.shape:
        raise ValueError(f"scores of different lengths: {new.shape} vs {old.shape}")
    if len(new) == 0:
        return Agreement(0, float("nan"), float("nan"))
    rho = float("nan")
    if len(new) > 1 and np.ptp(new) > 0 and np.ptp(old) > 0:
        rho = float(spearmanr(new, old).statistic)
    differ = (new >= new_threshold) != (old >= old_threshold)
    return Agreement(len(new), rho, float(differ.mean()))
