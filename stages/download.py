"""Stage `download`: put the CIFAR-10 binary archive (or the offline digits sample in the same layout) in place.

Reads params.yaml (`data`); writes the archive given as the one argument, e.g. data/cifar-10-binary.tar.gz.
Run: python stages/download.py data/cifar-10-binary.tar.gz
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library (see README)

from depthstudy.archive import build_digits_archive  # noqa: E402
from depthstudy.download import fetch  # noqa: E402
from depthstudy.errors import run_stage  # noqa: E402
from depthstudy.files import atomic_path  # noqa: E402
from depthstudy.params import load_params  # noqa: E402


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
