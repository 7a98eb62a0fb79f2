"""Where and how a stage computes: the device, the CPU threads (shared among `dvc queue` workers), the seeds."""

import json
import os
import random
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import nn

from depthstudy.distributed import World, cuda_device, queue_worker
from depthstudy.errors import UserError


def pick_device(name: str, world: World = World()) -> torch.device:
    """``auto`` = CUDA, then Apple's MPS, then the CPU; an explicit device that is absent is an error.

    On CUDA, the GPU of this process: one block of GPUs per `dvc queue` worker, one GPU of it per torchrun rank
    (distributed.cuda_device).
    """
    available = {"cuda": torch.cuda.is_available(), "mps": torch.backends.mps.is_available(), "cpu": True}
    if name == "auto":
        name = next(d for d in ("cuda", "mps", "cpu") if available[d])
    if not available[name]:
        raise UserError(f"params.yaml: train.device is {name!r}, but this machine has no {name} device (try auto)")
    if name == "cuda":
        return cuda_device(world, queue_worker(), torch.cuda.device_count())
    return torch.device(name)


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's global generators (weights, dropout)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def set_threads(threads: int = 0) -> int:
    """Set PyTorch's CPU thread count; returns the count in effect.

    ``threads`` 0 = auto: PyTorch's default (one per core), divided among the workers when this process runs a
    queued experiment (`dvc queue start -j N`), so that N parallel runs share the cores instead of thrashing them.
    """
    if not threads and (workers := dvc_queue_workers()) > 1:
        threads = max(1, torch.get_num_threads() // workers)
        print(f"train.threads = 0 (auto): {workers} DVC queue workers, so {threads} CPU thread(s) each", flush=True)
    if threads:
        torch.set_num_threads(threads)
    return torch.get_num_threads()


def dvc_queue_workers(cwd: str | None = None, environ: Mapping[str, str] = os.environ) -> int:
    """How many `dvc queue` workers are alive, if this process runs a queued experiment; 0 otherwise.

    DVC 3.x runs a queued experiment in a copy at $DVC_ROOT/.dvc/tmp/exps/tmp*/, with DVC_ROOT set to the
    project's root (dvc/repo/experiments/queue/base.py, stage/run.py); `dvc queue start -j N` records each worker
    it spawns in .dvc/tmp/exps/celery/dvc-exp-worker-<n>.json, {"pid": …, "returncode": null while it runs}
    (dvc_task's ManagedProcess). Anything else (a workspace run, another layout) counts as no queue.
    """
    root = environ.get("DVC_ROOT")
    if not root:
        return 0
    exps = Path(os.path.realpath(root)) / ".dvc" / "tmp" / "exps"
    if not Path(os.path.realpath(cwd or os.getcwd())).is_relative_to(exps):
        return 0
    alive = 0
    for info in (exps / "celery").glob("dvc-exp-worker-*.json"):
        try:
            state = json.loads(info.read_text())
            pid = state["pid"]
            if state["returncode"] is not None or not isinstance(pid, int) or pid <= 0:
                continue
            os.kill(pid, 0)  # signal 0: only asks whether the process exists (a killed worker leaves its file)
        except PermissionError:
            pass  # it exists, as another user's process
        except (OSError, ValueError, KeyError, TypeError):
            continue
        alive += 1
    return alive


def place_model(model: nn.Module, device: torch.device, compile: bool = False) -> tuple[nn.Module, bool]:
    """Move ``model`` to ``device`` with the fast settings there → (model, whether inputs should be channels_last).

    On CUDA, conv nets run NHWC and cuDNN picks its fastest kernels; ``compile`` uses torch.compile, with CUDA
    graphs on CUDA (at batch 32 a ResNet-18 step is bound by kernel launches). On the CPU nothing changes.
    """
    model = model.to(device)
    channels_last = device.type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules())
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        torch.backends.cudnn.benchmark = True
    if compile:
        model.compile(mode="max-autotune" if device.type == "cuda" else None)
    return model, channels_last
