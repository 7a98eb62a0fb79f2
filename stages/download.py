"""Stage `download`: put the CIFAR-10 binary archive (or the offline digits sample in the same layout) in place.

Reads params.yaml (`data`); writes the archive given as the one argument, e.g. data/cifar-10-binary.tar.gz.
Run: python stages/download.py data/cifar-10-binary.tar.gz
"""

import argparse
import sys
from pathlib import Path

from depthstudy.data import build_digits_archive
from depthstudy.download import fetch
from depthstudy.errors import run_stage
from depthstudy.files import atomic_path
from depthstudy.params import load_params


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("archive", type=Path, help="where to write the .tar.gz archive")
    args = parser.parse_args(argv)
    data = load_params().data
    if data.source == "digits":
        with atomic_path(args.archive) as tmp:
            build_digits_archive(tmp)
        print(f"wrote the offline digits sample to {args.archive}")
    else:
        fetch(data.url, args.archive, data.md5)
        print(f"downloaded {data.url} to {args.archive} (md5 {data.md5} verified)")


if __name__ == "__main__":
    sys.exit(run_stage(main))
