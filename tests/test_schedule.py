"""The learning-rate schedule: 0.1, ÷10 at 0.5 and 0.75 of the steps (He et al. 2015: 32k and 48k of 64k)."""

import pytest

from depthstudy.schedule import lr_at, milestone_steps


@pytest.mark.parametrize(
    "step, lr",
    [(0, 0.1), (31_999, 0.1), (32_000, 0.01), (32_001, 0.01), (47_999, 0.01), (48_000, 0.001), (63_999, 0.001)],
)
def test_the_papers_64k_iterations(step, lr):
    assert lr_at(step, 64_000, 0.1) == pytest.approx(lr)


def test_a_reduced_run_keeps_the_shape():
    lrs = [lr_at(s, 10, 0.1) for s in range(10)]
    assert lrs == pytest.approx([0.1] * 5 + [0.01] * 3 + [0.001] * 2)  # 0.75 × 10 = 7.5: divided from step 8


@pytest.mark.parametrize("total, lrs", [(3, [0.1, 0.1, 0.01]), (2, [0.1, 0.01]), (1, [0.1])])
def test_tiny_runs_start_at_the_base_lr_and_only_decay(total, lrs):
    assert [lr_at(s, total, 0.1) for s in range(total)] == pytest.approx(lrs)


def test_decimal_fractions_divide_at_the_exact_step():
    assert 0.55 * 100 > 55  # floating point: 55.00000000000001
    assert lr_at(55, 100, 1.0, milestones=(0.55,)) == pytest.approx(0.1)
    assert lr_at(54, 100, 1.0, milestones=(0.55,)) == 1.0


def test_other_milestones_and_gamma():
    assert lr_at(5, 100, 0.5, milestones=(0.05, 0.5), gamma=0.5) == 0.25
    assert lr_at(50, 100, 0.5, milestones=(0.05, 0.5), gamma=0.5) == 0.125
    assert lr_at(99, 100, 0.5, milestones=()) == 0.5


def test_milestone_steps_are_where_lr_at_changes():
    assert milestone_steps(64_064) == [32_032, 48_048]  # the paper's recipe here: 182 epochs × 352 steps
    assert milestone_steps(10) == [5, 8]
    assert milestone_steps(100, (0.55,)) == [55]
    for total in (1, 2, 3, 7, 10, 64):
        changes = [s for s in range(1, total) if lr_at(s, total, 1.0) != lr_at(s - 1, total, 1.0)]
        assert changes == [s for s in milestone_steps(total) if 0 < s < total], total
