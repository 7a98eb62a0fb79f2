"""The learning-rate schedule of He et al. 2015, §4.2, as a pure function of the step."""

import math


def milestone_steps(total_steps: int, milestones: tuple[float, ...] = (0.5, 0.75)) -> list[int]:
    """The first update (0-based) at each lower learning rate: ``milestones`` are fractions of ``total_steps``, and a
    milestone that falls between steps (0.75 of 10 = 7.5) takes effect at the next one (8). 64k steps → 32000, 48000.
    """
    # round(): the fractions are decimals from params.yaml, and 0.55 * 100 = 55.00000000000001 in floating point.
    return [math.ceil(round(m * total_steps, 6)) for m in milestones]


def lr_at(
    step: int, total_steps: int, base_lr: float, milestones: tuple[float, ...] = (0.5, 0.75), gamma: float = 0.1
) -> float:
    """The learning rate of update ``step`` (0-based) of ``total_steps``: ``base_lr``, times ``gamma`` once per
    milestone reached, milestones being fractions of ``total_steps`` (see ``milestone_steps``).

    The paper: 0.1, divided by 10 at 32k and 48k of 64k iterations, i.e. milestones 0.5 and 0.75; a shorter run
    keeps the same shape. The division happens *at* the milestone: once 32,000 updates are done, update 32,000
    (0-based) uses 0.01, as PyTorch's MultiStepLR stepped once per update and Caffe's "multistep" policy do.
    """
    reached = sum(step >= s for s in milestone_steps(total_steps, milestones))
    return base_lr * gamma**reached
