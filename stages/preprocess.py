"""Stage `preprocess`: parse the archive, split train/val/test, compute train-only channel stats.

Reads the archive and params.yaml (`data`); writes OUT_DIR/{train,val,test}.pt (uint8 images (N,3,32,32) and
int64 labels, loadable with torch.load(weights_only=True)) and OUT_DIR/meta.json (classes, counts, mean/std).
Run: python stages/preprocess.py data/cifar-10-binary.tar.gz data/prepared
"""

import argparse
import sys
from pathlib import Path

from depthstudy.data import prepare, save_splits
from depthstudy.errors import run_stage
from depthstudy.files import atomic_dir
from depthstudy.params import load_params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    splits, meta = prepare(args.archive, load_params().data)
    with atomic_dir(args.out_dir) as tmp:
        save_splits(tmp, splits, meta)
    print(f"wrote {args.out_dir}: " + ", ".join(f"{k} {v}" for k, v in meta["counts"].items()) + " images")


if __name__ == "__main__":
    sys.exit(run_stage(main))
