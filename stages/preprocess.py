"""Stage `preprocess`: parse the archive, split train/val/test, compute train-only channel stats.

Reads the archive and params.yaml (`data`); writes two directories, so that training never depends on the test
split: TRAINVAL_DIR with train_{images,labels}.npy, val_{images,labels}.npy and meta.json (classes, counts, the
train split's channel mean/std), and TEST_DIR with test_{images,labels}.npy and meta.json. Images are uint8
(N, 3, 32, 32), labels int64 (N,); numpy's format, no pickle.
Run: python stages/preprocess.py data/cifar-10-binary.tar.gz data/prepared/trainval data/prepared/test
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library (see README)

from depthstudy.data import save_splits  # noqa: E402
from depthstudy.errors import run_stage  # noqa: E402
from depthstudy.files import atomic_dir  # noqa: E402
from depthstudy.params import load_params  # noqa: E402
from depthstudy.prepare import OUTPUTS, output_meta, prepare  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", type=Path)
    parser.add_argument("trainval_dir", type=Path, help="where to write the train and val splits")
    parser.add_argument("test_dir", type=Path, help="where to write the test split")
    args = parser.parse_args(argv)
    splits, meta = prepare(args.archive, load_params().data)
    with atomic_dir(args.trainval_dir) as trainval, atomic_dir(args.test_dir) as test:
        tmp_dirs = {"trainval": trainval, "test": test}
        for output, names in OUTPUTS.items():
            save_splits(tmp_dirs[output], {name: splits[name] for name in names}, output_meta(meta, names))
    print(f"wrote {args.trainval_dir} and {args.test_dir}: "
          + ", ".join(f"{k} {v}" for k, v in meta["counts"].items()) + " images")


if __name__ == "__main__":
    sys.exit(run_stage(main))
