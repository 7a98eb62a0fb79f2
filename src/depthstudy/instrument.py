"""Per-layer learning evidence over an epoch: gradient norms, activation std, and how far each layer's weights moved.

A gradient norm alone does not show learning: Adam divides each gradient by its running RMS, so a tiny gradient
still moves a weight by ~lr unless Adam's eps dominates. ``LayerProbe`` adds what the weights and responses did.
"""

from collections.abc import Sequence

import torch
from torch import nn


def grad_norms(layers: Sequence[nn.Module]) -> torch.Tensor:
    """(L,) L2 norm of each layer's weight gradient, on the weights' device, no host sync; 0 where there is none.

    ``torch._foreach_norm`` (what clip_grad_norm_ uses): a few fused kernels instead of one per layer on CUDA; on
    the CPU it is 1-6% faster than a list of vector_norm calls (benchmarks/instrument.py).
    """
    grads = [m.weight.grad if m.weight.grad is not None else m.weight.new_zeros(()) for m in layers]
    return torch.stack(torch._foreach_norm(grads))


def response_std(output: torch.Tensor) -> torch.Tensor:
    """() std of a layer's output across the batch, per feature (dim 1), averaged over the features.

    Per feature, so that a response which does not depend on the input (default-init FC56, ../shared/FACTS.md)
    reads ~0 even when biases differ between units. (N, F) → std over N; (N, C, H, W) → over N, H, W per channel.
    Population std (correction 0): defined for a batch of one. Centred first, then squared: as exact as torch.std
    and 6-14× faster on the CPU, where torch.std reduces over dim 0 one element at a time (benchmarks/instrument.py).
    """
    out = output.detach().float()
    dims = [d for d in range(out.dim()) if d != 1]
    return (out - out.mean(dim=dims, keepdim=True)).square().mean(dim=dims).sqrt().mean()


class LayerProbe:
    """Per epoch, for each weight layer (``models.weight_layers``' order): mean weight-gradient norm and mean output
    std over the sampled steps, and the relative weight update ‖W_end − W_start‖ / ‖W_start‖ over the epoch.

    Every ``every``-th step is sampled (steps 0, every, 2·every, …): a forward hook per layer adds its response std
    and ``after_backward`` adds the gradient norms, all into sums on the device; only ``epoch_end`` syncs with the
    host. The update ratio covers weight matrices / conv kernels only: biases and norm layers' parameters are left
    out. It is exact up to fp32 rounding of W_end − W_start (~1e-7 relative): an update ratio below that reads 0.

    Memory: ``epoch_start`` copies every weight matrix, 4 bytes per weight (fp32), until ``epoch_end`` — FC56 at
    width 4096: 3.42 GiB (FC20: 1.17 GiB; ResNet-18: 43 MiB), +25% on the 13.7 GiB of weights, grads and Adam
    states. ``snapshot_device="cpu"`` keeps that copy off an accelerator, at the price of 2 × 3.4 GB over PCIe per
    epoch (estimated 0.3-0.7 s; FC56's epoch on an H200 is ≥ 11 s at the ≈8 ms/step bandwidth floor). On a CPU-only
    machine the copy is in the same memory either way.

    Call ``step(i)`` before each forward (i = the step's index in the epoch), ``after_backward()`` after each
    backward, ``epoch_start()`` / ``epoch_end()`` around each epoch. Use as a context manager (or ``close()``):
    the hooks are removed on exit.
    """

    def __init__(self, layers: Sequence[nn.Module], every: int = 10, snapshot_device: str | None = None):
        if every < 1:
            raise ValueError(f"every must be >= 1 (got {every})")
        self.layers, self.every, self.snapshot_device = list(layers), every, snapshot_device
        self.sampling = False  # whether the current step is sampled
        self.samples = 0  # sampled steps this epoch
        self._start: list[torch.Tensor] | None = None
        self._handles = [m.register_forward_hook(self._hook(j)) for j, m in enumerate(self.layers)]
        self._reset_sums()

    def _reset_sums(self) -> None:
        device = self.layers[0].weight.device
        self._std_sums = [torch.zeros((), device=device) for _ in self.layers]  # one () tensor per layer
        self._grad_sum = torch.zeros(len(self.layers), device=device)

    def _hook(self, j: int):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            if self.sampling:  # a Python bool: an unsampled step costs one call per layer, no kernel
                self._std_sums[j] = self._std_sums[j] + response_std(output)

        return hook

    def epoch_start(self) -> None:
        """Reset the sums and snapshot the weights (see the class docstring for the memory this takes)."""
        self._reset_sums()
        self.samples = 0
        self._start = [m.weight.detach().to(self.snapshot_device, copy=True) for m in self.layers]

    def step(self, i: int) -> bool:
        """Before step ``i``'s forward: sample it if ``i % every == 0``. Returns whether it is sampled."""
        self.sampling = i % self.every == 0
        self.samples += int(self.sampling)
        return self.sampling

    def after_backward(self) -> None:
        """After the backward pass, before the optimizer step: add the weight-gradient norms on a sampled step."""
        if self.sampling:
            self._grad_sum += grad_norms(self.layers)

    @torch.no_grad()
    def epoch_end(self) -> dict[str, list[float]]:
        """→ {"grad_norm", "act_std", "update_ratio"}: one float per layer each; frees the snapshot.

        An update ratio is inf (nan for 0/0) if a layer started the epoch with all weights zero.
        """
        if self._start is None:
            raise RuntimeError("LayerProbe.epoch_end() without epoch_start()")
        self.sampling = False  # no hook records outside training steps (validation, say)
        start_norms = torch.stack(torch._foreach_norm(self._start))
        # in place: W_start − W_end, the same norm as ΔW; no second copy of the weights
        deltas = [torch.linalg.vector_norm(s.sub_(m.weight.to(s.device))) for s, m in zip(self._start, self.layers)]
        self._start = None
        n = max(self.samples, 1)
        return {
            "grad_norm": (self._grad_sum / n).tolist(),
            "act_std": (torch.stack(self._std_sums) / n).tolist(),
            "update_ratio": (torch.stack(deltas) / start_norms).tolist(),
        }

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def __enter__(self) -> "LayerProbe":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
