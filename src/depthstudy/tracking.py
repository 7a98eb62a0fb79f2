"""Per-epoch logging: scalar metrics through dvclive, the per-layer gradient flow as one TSV beside them."""

from pathlib import Path

from dvclive import Live

GRAD_NORMS = "grad_norms.tsv"


class EpochLog:
    """One dvclive step per epoch in ``live_dir``, plus ``grad_norms.tsv`` (step, epoch, layer, name, grad_norm).

    The gradient flow is a table rather than one dvclive metric per layer (56 for FC56), which would flood
    `dvc exp show`; only the first and last layers' norms are dvclive metrics. Opening it clears the directory,
    as dvclive does without ``resume``: a resumed run replays its history instead (see stages/train.py).
    """

    def __init__(self, live_dir: Path, layer_names: list[str], params: dict, summary: dict):
        self.live = Live(str(live_dir), dvcyaml=False, save_dvc_exp=False)
        self.live.log_params(params)
        self.live.summary.update(summary)
        self.layer_names = layer_names
        self.grads = open(Path(live_dir) / GRAD_NORMS, "w")
        self.grads.write("step\tepoch\tlayer\tname\tgrad_norm\n")

    def log_epoch(self, epoch: int, metrics: dict[str, float], grad_norms: list[float]) -> None:
        for name, value in metrics.items():
            self.live.log_metric(name, value)
        self.live.log_metric("grad/first_layer", grad_norms[0])
        self.live.log_metric("grad/last_layer", grad_norms[-1])
        self.grads.writelines(
            f"{self.live.step}\t{epoch}\t{i}\t{name}\t{norm:.6e}\n"
            for i, (name, norm) in enumerate(zip(self.layer_names, grad_norms))
        )
        self.grads.flush()
        self.live.next_step()

    def __enter__(self) -> "EpochLog":
        return self

    def __exit__(self, *exc) -> None:
        self.grads.close()
        self.live.end()
