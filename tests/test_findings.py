"""Findings on hand-made numbers: chance and ranking decided by tests at the split's size, gradient and update
sentences that stay true for zeros, ties, tiny splits, one seed or several."""

import math
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from depthstudy.findings import (
    ModelEvidence,
    chance_finding,
    chance_p_value,
    chance_verdict,
    differ,
    difference_p_value,
    findings,
    format_p,
    gradient_finding,
    mean_std,
    ranking_finding,
    sampling_p_value,
    seeds_p_value,
)


def ev(name="m", val=None, test=None, n_val=5000, n_test=10000, **kw) -> ModelEvidence:
    """One model's evidence; val and test default to each other (and to 0.5 on one seed)."""
    val, test = val or test or (0.5,), test or val or (0.5,)
    return ModelEvidence(name, tuple(val), n_val, tuple(test), n_test, **kw)


def no_inf_nan(text: str) -> bool:
    return not re.search("inf|nan", text, re.IGNORECASE)


# --- chance -------------------------------------------------------------------------------------------------------


def test_binomial_p_value_matches_a_hand_computation():
    n, k, p0 = 20, 5, 0.1
    upper = sum(math.comb(n, i) * p0**i * (1 - p0) ** (n - i) for i in range(k, n + 1))
    lower = sum(math.comb(n, i) * p0**i * (1 - p0) ** (n - i) for i in range(k + 1))
    assert chance_p_value(k / n, n, 10) == pytest.approx(upper, rel=1e-9)
    assert chance_p_value(k / n, n, 10, "less") == pytest.approx(lower, rel=1e-9)


@pytest.mark.parametrize("acc, n, verdict", [
    (0.149, 5000, "above"),  # ~12 standard errors above chance: today's rule calls it "at chance"
    (0.14, 50, "chance"),  # 7 of 50: p ~ 0.23
    (0.14, 5000, "above"),  # the same accuracy on 100x the images
    (0.15, 20, "chance"),
    (0.1, 10000, "chance"),  # exactly at chance
    (1.0, 1, "chance"),  # one image right: p = 0.1
    (1.0, 30, "above"),
    (0.0, 20, "chance"),  # 0.9**20 = 0.12: none right out of 20 happens by chance
    (0.0, 5000, "below"),
    (0.08, 10000, "below"),
    (0.098, 100, "chance"),
])
def test_chance_verdict_depends_on_the_split_size(acc, n, verdict):
    kind, p = chance_verdict(acc, n, 10)
    assert kind == verdict
    assert (p < 0.05) == (verdict != "chance")


def test_chance_sentence_says_which_side_and_gives_p():
    above = chance_finding(ev(val=(0.149,), n_val=5000, test=(0.14,), n_test=50), 10)
    assert "validation accuracy 0.149 on 5,000 images, above chance (p < 0.001)" in above
    assert "test accuracy 0.140 on 50 images, indistinguishable from chance (p = 0.23)" in above
    below = chance_finding(ev(val=(0.0,), test=(0.08,)), 10)
    assert "above" not in below and below.count("below chance") == 2


def test_chance_with_several_seeds_tests_each_seed():
    text = chance_finding(ev(val=(0.2, 0.1, 0.21), n_val=5000), 10)
    assert "0.170 ± 0.061 (mean ± std of 3 seeds)" in text
    assert "above chance in 2 of 3 seeds (largest p < 0.001)" in text
    assert "indistinguishable from chance in 1 of 3 seeds (smallest p = 0.5" in text


def test_identical_seeds_show_zero_spread_and_a_single_verdict():
    text = chance_finding(ev(val=(0.1, 0.1, 0.1)), 10)
    assert "0.100 ± 0.000 (mean ± std of 3 seeds)" in text
    assert "indistinguishable from chance in 3 of 3 seeds" in text and "above" not in text


def test_format_p_never_rounds_a_significant_p_up_to_alpha():
    assert format_p(0.0496) == "p < 0.05"
    assert format_p(0.0504) == "p = 0.05"
    assert format_p(0.0) == "p < 0.001"
    assert format_p(1.0) == "p = 1"


# --- statistics helpers -------------------------------------------------------------------------------------------


def test_mean_std_uses_the_sample_std_and_nan_for_one_seed():
    mean, std, n = mean_std([0.1, 0.2, 0.3])
    assert (mean, n) == (pytest.approx(0.2), 3) and std == pytest.approx(0.1)
    assert mean_std([0.1, 0.1]) == (0.1, 0.0, 2)
    assert math.isnan(mean_std([0.4])[1])
    for bad in ([], [0.1, math.nan]):
        with pytest.raises(ValueError):
            mean_std(bad)


def test_welch_matches_scipy_and_is_undefined_without_spread():
    a, b = [0.81, 0.86, 0.84, 0.80], [0.70, 0.78, 0.75]
    assert seeds_p_value(a, b) == pytest.approx(stats.ttest_ind(a, b, equal_var=False).pvalue, rel=1e-9)
    # one side without spread: t = 0.04 / 0.01 = 4 on 1 degree of freedom, a Cauchy tail
    assert seeds_p_value([0.25, 0.25], [0.2, 0.22]) == pytest.approx(1 - 2 * math.atan(4) / math.pi, rel=1e-9)
    assert seeds_p_value([0.5], [0.1, 0.2]) is None  # one seed: no spread measurable
    assert seeds_p_value([0.1, 0.1], [0.3, 0.3]) is None  # no spread on either side


def test_a_gap_significant_at_10000_images_is_not_at_100():
    assert sampling_p_value(0.53, 10000, 0.50, 10000) < 0.001
    assert sampling_p_value(0.53, 100, 0.50, 100) > 0.5
    assert differ(ev(test=(0.53,)), ev(test=(0.50,)))
    assert not differ(ev(test=(0.53,), n_test=100), ev(test=(0.50,), n_test=100))


def test_several_seeds_need_both_the_sampling_and_the_seed_test():
    steady, noisy = ev(test=(0.52, 0.52, 0.52)), ev(test=(0.50, 0.50, 0.50))
    assert differ(steady, noisy)  # no spread: sampling error alone decides (Fisher p ~ 0.005)
    wide = ev(test=(0.30, 0.74, 0.52))  # same mean as `steady`, huge seed spread
    assert not differ(wide, noisy)
    assert difference_p_value(wide, noisy) == pytest.approx(seeds_p_value(wide.test_acc, noisy.test_acc))
    assert not differ(ev(test=(0.1, 0.1)), ev(test=(0.1, 0.1)))  # identical seeds, identical models


# --- ranking ------------------------------------------------------------------------------------------------------


def test_ties_are_never_ranked():
    text = ranking_finding([ev("fc20", test=(0.1,)), ev("fc56", test=(0.1,))])
    assert "fc20 (0.100) ≈ fc56 (0.100)" in text and ">" not in text.split(".")[0]


def test_three_models_in_the_seed_study_shape():
    models = [ev("fc56", test=(0.1,)), ev("resnet18", test=(0.87,)), ev("fc20", test=(0.37,))]
    text = ranking_finding(models)
    assert text.startswith("Test accuracy: resnet18 (0.870) > fc20 (0.370) > fc56 (0.100).")
    assert "Fisher" in text and "Welch" not in text and "not neighbours" not in text


def test_a_chain_of_ties_names_the_ends_that_differ():
    # 0.52 vs 0.51 and 0.51 vs 0.50 are within error at 10,000 images; 0.52 vs 0.50 is not
    text = ranking_finding([ev("a", test=(0.52,)), ev("b", test=(0.51,)), ev("c", test=(0.50,))])
    assert "a (0.520) ≈ b (0.510) ≈ c (0.500)" in text
    assert "tested directly: a > c" in text


def test_a_chain_with_a_gap_names_the_ends_that_do_not_differ():
    wide, mid, low = ev("wide", test=(0.9, 0.1, 0.5)), ev("mid", test=(0.45,) * 3), ev("low", test=(0.1,) * 3)
    text = ranking_finding([low, wide, mid])
    assert "wide (0.500, 3 seeds) ≈ mid (0.450, 3 seeds) > low (0.100, 3 seeds)" in text
    assert "tested directly: wide ≈ low" in text and "Welch" in text


def test_one_model_is_not_ranked():
    assert ranking_finding([ev("resnet18", test=(0.87,))]) == "Test accuracy: resnet18 (0.870); no other model to rank."


def test_every_pair_the_ranking_implies_holds():
    models = [ev(str(i), test=(acc,), n_test=2000) for i, acc in enumerate([0.5, 0.49, 0.47, 0.46, 0.44, 0.1, 0.1])]
    text = ranking_finding(models)
    chain, _, rest = text.partition(". ")
    names = re.findall(r"(\d+) \(", chain)
    gaps = re.findall(r"\) (>|≈) ", chain)
    stated = dict(((a, b), g) for a, g, b in re.findall(r"(\d+) (>|≈) (\d+)", rest))
    by_name = {m.name: m for m in models}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            implied = stated.get((names[i], names[j]), ">" if ">" in gaps[i:j] else "≈")
            assert (implied == ">") == differ(by_name[names[i]], by_name[names[j]]), (names[i], names[j], text)


# --- gradients and updates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("first, last, words", [
    (1e-14, 1e-3, ["11.0 orders of magnitude below", "vanishes"]),
    (1e-5, 1e-3, ["2.0 orders of magnitude below", "shrinks"]),
    (3e-3, 1e-3, ["within an order of magnitude", "reaches the input"]),
    (6e3, 1.0, ["3.8 orders of magnitude above", "grows"]),
    (5e-324, 1e3, ["326.3 orders of magnitude below", "vanishes"]),  # subnormal: no overflow to infinity
    (0.0, 1e-3, ["first weight layer's gradient is exactly 0", "1.0e-03"]),
    (1e-3, 0.0, ["last weight layer's gradient is exactly 0", "1.0e-03"]),
    (0.0, 0.0, ["both exactly 0"]),
    (math.nan, 1e-3, ["not a finite number"]),
    (1e-3, math.inf, ["not a finite number"]),
])
def test_gradient_sentences(first, last, words):
    text = gradient_finding(ev("fc56", grad_first=first, grad_last=last, num_layers=56))
    assert all(w in text for w in words), text
    assert no_inf_nan(text) and "moved" not in text and "learn" not in text


@pytest.mark.parametrize("first, last, verdict", [
    (2e-7, 0.35, "barely moved"),  # Adam's eps dominated the first layer's tiny gradient
    (0.002, 0.5, "barely moved"),  # above 0.1%, but < 1% of the last layer's move
    (0.0005, 0.0004, "barely moved"),  # comparable to the last layer, but < 0.1% of its norm in an epoch
    (0.3, 0.5, "moved"),
    (0.0, 0.5, "did not move at all"),
    (0.0, 0.0, "did not move at all; neither did"),
])
def test_movement_is_decided_by_update_ratios(first, last, verdict):
    text = gradient_finding(ev(grad_first=1e-14, grad_last=1e-3, update_first=first, update_last=last))
    assert verdict in text and no_inf_nan(text)
    assert ("barely" in text) == (verdict == "barely moved")
    assert f"{100 * last:.2g}%" in text or last == 0


def test_without_update_ratios_nothing_is_said_about_movement():
    for grads in ({}, {"grad_first": 1e-14, "grad_last": 1e-3}):
        text = gradient_finding(ev(**grads))
        assert "moved" not in text and "move" not in text and "no weight-update ratios were logged" in text


def test_a_single_layer_has_no_first_to_last_comparison():
    assert "single weight layer" in gradient_finding(ev(grad_first=1.0, grad_last=1.0, num_layers=1))


# --- impossible input and the whole list --------------------------------------------------------------------------


@pytest.mark.parametrize("kw", [
    {"n_val": 0}, {"n_test": -5}, {"n_val": 2.5}, {"val": (math.nan,)}, {"val": (1.2,)},
    {"val": (0.5, 0.5), "test": (0.5,)}, {"grad_first": 1.0}, {"grad_first": -1.0, "grad_last": 1.0},
    {"update_last": 0.1}, {"num_layers": 0},
])
def test_impossible_evidence_is_rejected(kw):
    with pytest.raises(ValueError):
        ev(**kw)


def test_bad_calls_are_rejected():
    with pytest.raises(ValueError):
        ModelEvidence("no seeds", (), 5000, (), 10000)
    with pytest.raises(ValueError):
        chance_finding(ev(), 1)
    with pytest.raises(ValueError):
        findings([], 10)
    with pytest.raises(ValueError):
        ranking_finding([ev("a"), ev("a")])


def test_findings_lists_chance_gradient_and_ranking():
    models = [ev("fc20", val=(0.18,), test=(0.37,), grad_first=1e-5, grad_last=1e-3),
              ev("fc56", val=(0.1,), test=(0.1,), grad_first=1e-14, grad_last=1e-3, update_first=1e-7, update_last=0.3)]
    lines = findings(models, 10)
    assert len(lines) == 5 and lines[-1].startswith("Test accuracy: fc20 (0.370) > fc56 (0.100)")
    assert "barely moved" in lines[3] and "moved" not in lines[2]


grad = st.one_of(st.none(), st.sampled_from([0.0, math.nan, math.inf, 5e-324]), st.floats(1e-30, 1e30))
accs = st.lists(st.floats(0, 1), min_size=1, max_size=4)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(accs, st.integers(1, 20000), st.sampled_from([None, 1, 56]), grad, grad, grad, grad),
                min_size=1, max_size=4))
def test_no_sentence_ever_says_inf_or_nan(rows):
    def pair(first, last):  # both or neither
        return first, None if first is None else (first if last is None else last)

    models = [ev(f"m{i}", val=a, test=a, n_val=n, n_test=n, num_layers=layers,
                 **dict(zip(["grad_first", "grad_last"], pair(g1, g2))),
                 **dict(zip(["update_first", "update_last"], pair(u1, u2))))
              for i, (a, n, layers, g1, g2, u1, u2) in enumerate(rows)]
    for line in findings(models, 10):
        assert no_inf_nan(line), line
