"""The report's findings: what the numbers allow us to claim, in sentences that stay true at the edges.

Three decisions, each with a rule stated here and in the sentence:

- **Chance.** Is an accuracy above (or below) 1/num_classes? Each seed's accuracy is tested on its own, with an
  exact one-sided binomial test at its split's size (p < ALPHA), once for "above" and once for "below"; otherwise it
  is "indistinguishable from chance". The splits are stratified (meta.json's class_counts), so 1/num_classes is
  also what a constant guess scores.
- **Ranking.** Is one model's test accuracy higher than another's? Only when the gap is beyond the test split's
  sampling error (Fisher's exact test on the mean accuracies) and, where both models have two or more seeds, beyond
  the seed-to-seed spread (Welch's t-test); both at p < ALPHA, each pair on its own, with no correction for the
  number of pairs.
- **Gradient flow.** How many orders of magnitude lie between the first and the last weight layer's epoch-1
  gradient norms. Whether a layer learned is decided only from its relative weight update ‖ΔW‖/‖W‖, never from its
  gradient: Adam divides each gradient by its running RMS, so a tiny gradient still moves a weight by ~lr unless
  Adam's eps (1e-8) dominates it.

It reads no files and draws nothing; sentences are plain strings that fit in a Markdown bullet.
"""

import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral

from scipy import stats

ALPHA = 0.05  # the level of every test here
VANISH_ORDERS = 6.0  # first layer's gradient this many orders of magnitude below the last's: "vanishes"
SHRINK_ORDERS = 1.0  # ... this many: "shrinks"; as many above: "grows"; in between: "reaches the input"
MOVED = 1e-3  # a first layer "moved" in an epoch if ‖ΔW‖/‖W‖ >= 0.1% ...
MOVED_VS_LAST = 1e-2  # ... and >= 1% of the last layer's relative update; otherwise it "barely moved"
VERDICT = {"above": "above chance", "below": "below chance", "chance": "indistinguishable from chance"}


@dataclass(frozen=True)
class ModelEvidence:
    """What one model (or one configuration) measured. Accuracies: one per seed, val and test in the same order."""

    name: str
    val_acc: tuple[float, ...]  # final validation accuracy per seed
    n_val: int  # validation split size (images)
    test_acc: tuple[float, ...]  # test accuracy per seed
    n_test: int
    grad_first: float | None = None  # mean L2 norm of the first weight layer's gradient in epoch 1; None: not logged
    grad_last: float | None = None  # ... of the last weight layer
    update_first: float | None = None  # ‖W_end - W_start‖ / ‖W_start‖ of the first weight layer over epoch 1
    update_last: float | None = None  # ... of the last weight layer
    num_layers: int | None = None  # weight layers, for the sentence

    def __post_init__(self):
        for split in ("val", "test"):
            accs = tuple(float(a) for a in getattr(self, f"{split}_acc"))
            object.__setattr__(self, f"{split}_acc", accs)
            _check_accuracies(accs, getattr(self, f"n_{split}"), f"{self.name}: {split}")
        if len(self.val_acc) != len(self.test_acc):
            raise ValueError(f"{self.name}: {len(self.val_acc)} val accuracies but {len(self.test_acc)} test ones")
        for first, last in (("grad_first", "grad_last"), ("update_first", "update_last")):
            values = getattr(self, first), getattr(self, last)
            if (values[0] is None) != (values[1] is None):
                raise ValueError(f"{self.name}: give both {first} and {last}, or neither")
            if any(v is not None and v < 0 for v in values):
                raise ValueError(f"{self.name}: {first}/{last} must be >= 0, got {values}")
        if self.num_layers is not None and self.num_layers < 1:
            raise ValueError(f"{self.name}: num_layers must be >= 1, got {self.num_layers}")


def _check_accuracies(accs: Sequence[float], n: int, what: str) -> None:
    if not isinstance(n, Integral) or n <= 0:
        raise ValueError(f"{what} split size must be a positive integer, got {n!r}")
    if not accs:
        raise ValueError(f"{what} needs at least one accuracy (one per seed)")
    if not all(0 <= a <= 1 for a in accs):  # NaN fails this too
        raise ValueError(f"{what} accuracies must lie in [0, 1], got {list(accs)}")


def _check_classes(num_classes: int) -> None:
    if not isinstance(num_classes, Integral) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")


# --- statistics ---------------------------------------------------------------------------------------------------


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1, n) of per-seed values; std is NaN for one value (no spread to measure)."""
    values = [float(v) for v in values]
    if not values or not all(math.isfinite(v) for v in values):
        raise ValueError(f"mean_std needs at least one finite value, got {values}")
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else math.nan, len(values)


def chance_p_value(acc: float, n: int, num_classes: int, alternative: str = "greater") -> float:
    """Exact one-sided binomial p-value of round(acc * n) correct out of n under H0: accuracy = 1/num_classes.

    ``alternative="greater"`` tests for above chance, ``"less"`` for below.
    """
    _check_accuracies([acc], n, "chance_p_value:")
    _check_classes(num_classes)
    return float(stats.binomtest(round(acc * n), n, 1 / num_classes, alternative=alternative).pvalue)


def chance_verdict(acc: float, n: int, num_classes: int) -> tuple[str, float]:
    """("above" | "below", p of that one-sided test) when p < ALPHA, else ("chance", p of the test for "above")."""
    above = chance_p_value(acc, n, num_classes, "greater")
    if above < ALPHA:
        return "above", above
    below = chance_p_value(acc, n, num_classes, "less")  # both tails can't be < ALPHA: they sum to >= 1
    return ("below", below) if below < ALPHA else ("chance", above)


def sampling_p_value(acc_a: float, n_a: int, acc_b: float, n_b: int) -> float:
    """Two-sided Fisher exact p-value that two accuracies, on n_a and n_b images, differ beyond sampling error.

    Treats the two splits as independent samples. On the same test images, two models' errors are usually positively
    correlated, which makes this conservative; McNemar's paired test would need per-image predictions.
    """
    k_a, k_b = round(acc_a * n_a), round(acc_b * n_b)
    return float(stats.fisher_exact([[k_a, n_a - k_a], [k_b, n_b - k_b]]).pvalue)


def seeds_p_value(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Welch's two-sided t-test p-value on per-seed accuracies, or None where it is undefined: fewer than two seeds
    on either side, or no spread on both (then only sampling error can tell the two apart)."""
    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)  # squared standard errors
    if va + vb == 0:
        return None
    t = (statistics.fmean(a) - statistics.fmean(b)) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch–Satterthwaite
    return float(2 * stats.t.sf(abs(t), df))


def difference_p_value(a: ModelEvidence, b: ModelEvidence) -> float:
    """p-value for "a's and b's test accuracies differ": the larger of the sampling-error and seed-spread p-values,
    so a difference needs both tests (an intersection-union test, which keeps the level ALPHA). The sampling test
    takes the seeds' mean accuracy as one proportion at n_test images: over draws of the test images it varies no
    more than a single seed's accuracy does."""
    mean_a, mean_b = statistics.fmean(a.test_acc), statistics.fmean(b.test_acc)
    p_values = [sampling_p_value(mean_a, a.n_test, mean_b, b.n_test), seeds_p_value(a.test_acc, b.test_acc)]
    return max(p for p in p_values if p is not None)


def differ(a: ModelEvidence, b: ModelEvidence) -> bool:
    return difference_p_value(a, b) < ALPHA


def format_p(p: float) -> str:
    """p for a sentence: "p < 0.001" below that, else two significant digits, never rounded up to ALPHA."""
    if p < 0.001:
        return "p < 0.001"
    text = f"{p:.2g}"
    return f"p < {ALPHA:g}" if p < ALPHA <= float(text) else f"p = {text}"


# --- sentences ----------------------------------------------------------------------------------------------------


def _chance_clause(accs: tuple[float, ...], n: int, num_classes: int) -> str:
    verdicts = [chance_verdict(a, n, num_classes) for a in accs]
    if len(accs) == 1:
        kind, p = verdicts[0]
        return f"{accs[0]:.3f} on {n:,} images, {VERDICT[kind]} ({format_p(p)})"
    mean, std, k = mean_std(accs)
    parts = []
    for kind, extreme, worst in (("above", max, "largest"), ("below", max, "largest"), ("chance", min, "smallest")):
        ps = [p for v, p in verdicts if v == kind]
        if ps:  # the p-value nearest ALPHA is the one that bounds the claim
            parts.append(f"{VERDICT[kind]} in {len(ps)} of {k} seeds ({worst} {format_p(extreme(ps))})")
    return f"{mean:.3f} ± {std:.3f} (mean ± std of {k} seeds) on {n:,} images, " + ", ".join(parts)


def chance_finding(ev: ModelEvidence, num_classes: int) -> str:
    """Whether each seed's validation and test accuracy is above, below or indistinguishable from chance."""
    _check_classes(num_classes)
    return (f"{ev.name}: validation accuracy {_chance_clause(ev.val_acc, ev.n_val, num_classes)}; test accuracy "
            f"{_chance_clause(ev.test_acc, ev.n_test, num_classes)} (chance: 1/{num_classes}; one-sided exact "
            f"binomial test per seed, p < {ALPHA:g}).")


def ranking_finding(evs: Sequence[ModelEvidence]) -> str:
    """Models by mean test accuracy, neighbours joined by ">" (a gap beyond error) or "≈" (within it).

    "≈" is not transitive, so every non-neighbour pair whose own test disagrees with what the chain suggests
    (">" if a ">" lies between them, else "≈") is named after the chain: every pairwise reading is then true.
    """
    if not evs:
        raise ValueError("ranking needs at least one model")
    if len({e.name for e in evs}) != len(evs):
        raise ValueError(f"model names must be unique, got {[e.name for e in evs]}")
    ranked = sorted(evs, key=lambda e: -statistics.fmean(e.test_acc))  # stable: equal means keep the input order
    several = any(len(e.test_acc) > 1 for e in evs)

    def label(e: ModelEvidence) -> str:
        seeds = f", {len(e.test_acc)} seed{'s' * (len(e.test_acc) > 1)}" if several else ""
        return f"{e.name} ({statistics.fmean(e.test_acc):.3f}{seeds})"

    head = "Test accuracy" + (" (mean over seeds)" if several else "")
    if len(ranked) == 1:
        return f"{head}: {label(ranked[0])}; no other model to rank."
    gaps = [">" if differ(x, y) else "≈" for x, y in zip(ranked, ranked[1:])]
    chain = label(ranked[0]) + "".join(f" {g} {label(e)}" for g, e in zip(gaps, ranked[1:]))
    surprises = []
    for i in range(len(ranked)):
        for j in range(i + 2, len(ranked)):
            direct = ">" if differ(ranked[i], ranked[j]) else "≈"
            if direct != (">" if ">" in gaps[i:j] else "≈"):
                surprises.append(f"{ranked[i].name} {direct} {ranked[j].name}")
    error = "the test split's sampling error (Fisher's exact test)"
    if several:
        error += " and, where both models have two or more seeds, the seed-to-seed spread (Welch's t-test)"
    text = f"{head}: {chain}. '>' marks a gap beyond {error}, p < {ALPHA:g} per pair; '≈' a gap within it"
    if surprises:
        text += "; pairs that are not neighbours, tested directly: " + ", ".join(surprises)
    return text + "."


def _orders(first: float, last: float) -> float:
    # log10 of each, not of the ratio: a subnormal first norm would overflow last / first. Rounded to the figure shown.
    return round(math.log10(last) - math.log10(first), 1)


def _gradient_clause(ev: ModelEvidence) -> str:
    first, last = ev.grad_first, ev.grad_last
    if first is None:
        return "no gradient norms were logged"
    if ev.num_layers == 1:
        return "it has a single weight layer, so there is no first-to-last comparison"
    if not (math.isfinite(first) and math.isfinite(last)):
        return "the first or the last weight layer's mean gradient norm is not a finite number"
    if first == 0 and last == 0:
        return "the first and the last weight layer's gradients are both exactly 0 throughout"
    if first == 0:
        return f"the first weight layer's gradient is exactly 0 throughout (the last layer's mean norm: {last:.1e})"
    if last == 0:
        return f"the last weight layer's gradient is exactly 0 throughout (the first layer's mean norm: {first:.1e})"
    layers = f"the first of {ev.num_layers} weight layers" if ev.num_layers else "the first weight layer"
    head, orders = f"{layers} gets a mean gradient norm of {first:.1e}", _orders(first, last)
    if abs(orders) < SHRINK_ORDERS:
        return f"{head}, within an order of magnitude of the last layer's ({last:.1e}): the gradient reaches the input"
    side = "below" if orders > 0 else "above"
    band = "grows" if orders < 0 else "vanishes" if orders >= VANISH_ORDERS else "shrinks"
    return (f"{head}, {abs(orders):.1f} orders of magnitude {side} the last layer's ({last:.1e}): "
            f"the gradient {band} towards the input")


def _update_clause(ev: ModelEvidence) -> str:
    if ev.update_first is None:
        return "no weight-update ratios were logged"
    if not (math.isfinite(ev.update_first) and math.isfinite(ev.update_last)):
        return "the first or the last weight layer's relative weight update is not a finite number"
    first, last = float(f"{ev.update_first:.2g}"), float(f"{ev.update_last:.2g}")  # decide on the figures shown
    if first == 0:
        rest = "neither did the last layer's" if last == 0 else f"the last layer's moved by {100 * last:.2g}%"
        return f"the first layer's weights did not move at all; {rest}"
    barely = first < MOVED or first < MOVED_VS_LAST * last
    return (f"the first layer's weights moved by {100 * first:.2g}% of their norm over the epoch vs "
            f"{100 * last:.2g}% for the last layer's: the first layer {'barely moved' if barely else 'moved'}")


def gradient_finding(ev: ModelEvidence) -> str:
    """Epoch 1's gradient flow (orders of magnitude, first vs last layer) and, from update ratios only, movement."""
    return f"{ev.name}, epoch 1: {_gradient_clause(ev)}; {_update_clause(ev)}."


def findings(evs: Sequence[ModelEvidence], num_classes: int) -> list[str]:
    """The report's findings: one chance sentence and one gradient sentence per model, then the ranking."""
    if not evs:
        raise ValueError("findings need at least one model")
    return [chance_finding(e, num_classes) for e in evs] + [gradient_finding(e) for e in evs] + [ranking_finding(evs)]
