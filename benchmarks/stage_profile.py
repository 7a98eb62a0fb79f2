"""Where one training stage's time goes: stages/train.py's main, run in-process with timers around its phases.

Run from a project root (the stage reads params.yaml there) with the stage's own arguments, e.g.
    python benchmarks/stage_profile.py resnet18 data/prepared/trainval data/models/resnet18.pt metrics/resnet18
Prints one JSON line, phase → seconds. The caller times the whole process: the rest is interpreter start and exit.
A phase whose function the stage no longer has is simply absent (its time lands in "other").
"""

import time

START = time.perf_counter()

import importlib  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
from collections import defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

IMPORTS = {
    "torch": "import torch",
    "torchvision": "import torchvision",
    "sklearn.metrics": "import scikit-learn",
    "dvclive": "import dvclive",
    "depthstudy.train": "import depthstudy",
}
seconds: dict[str, float] = defaultdict(float)


def wrap(owner, attr: str, phase: str) -> None:
    """Replace ``owner.attr`` by a wrapper that adds its run time to ``seconds[phase]``; absent → nothing."""
    fn = getattr(owner, attr, None)
    if fn is None:
        return

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            seconds[phase] += time.perf_counter() - start

    setattr(owner, attr, timed)


def load_stage():
    """Import ``stages/train.py`` (after the big imports above, so this times only what is left)."""
    spec = importlib.util.spec_from_file_location("stage_train", Path("stages/train.py"))
    stage = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(stage)
    return stage


def instrument(stage) -> None:
    """Time the stage's phases: data, model, training, validation, dvclive logging, checkpoints."""
    import depthstudy.resume as resume
    import depthstudy.train as train

    for attr in ("load_split", "load_meta", "to_device"):
        wrap(stage, attr, "load data")
    for attr in ("build_model", "place_model", "make_optimizer"):
        wrap(stage, attr, "build model + optimizer")
    wrap(train, "train_epoch", "train (train_epoch)")
    wrap(train, "predict", "validate (predict + metrics)")
    wrap(train, "classification_metrics", "validate (predict + metrics)")
    for attr in ("provenance", "load", "save"):
        wrap(resume, attr, "checkpoints (provenance, resume state, weights)")
    wrap(stage, "save_weights", "checkpoints (provenance, resume state, weights)")
    log_class = getattr(stage, "EpochLog", None)
    for attr in ("__init__", "log_epoch", "__exit__"):
        wrap(log_class, attr, "dvclive logging")


def main(argv: list[str]) -> None:
    for module, phase in IMPORTS.items():
        start = time.perf_counter()
        importlib.import_module(module)
        seconds[phase] += time.perf_counter() - start
    start = time.perf_counter()
    stage = load_stage()
    seconds["import the stage (the rest)"] += time.perf_counter() - start
    instrument(stage)
    start = time.perf_counter()
    stage.main(argv)
    inside = time.perf_counter() - start
    timed_inside = sum(v for k, v in seconds.items() if not k.startswith("import"))
    seconds["other (params, seeding, prints)"] = inside - timed_inside
    seconds["in-process total"] = time.perf_counter() - START
    print(json.dumps(seconds))


if __name__ == "__main__":
    main(sys.argv[1:])
