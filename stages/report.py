"""Stage `report`: the study's Markdown report with PNG figures, from the metrics files alone.

Reads params.yaml, each model's dvclive directory, evaluate's output directory and the data's meta.json;
writes OUT_DIR/report.md, learning_curves.png, grad_norms.png and confusion.png.
Run: python stages/report.py plots/report metrics/fc20 metrics/fc56 metrics/resnet18 metrics/evaluate \
         data/prepared/meta.json
"""

import argparse
import json
import sys
from pathlib import Path

from depthstudy.errors import run_stage
from depthstudy.files import atomic_dir
from depthstudy.params import load_params
from depthstudy.report import load_run, write_report


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("live_dirs", type=Path, nargs="+", help="the models' dvclive directories")
    parser.add_argument("eval_dir", type=Path, help="evaluate's output directory")
    parser.add_argument("meta", type=Path, help="the prepared data's meta.json")
    args = parser.parse_args(argv)
    runs = [load_run(d) for d in args.live_dirs]
    test = json.loads((args.eval_dir / "per_class.json").read_text())
    meta = json.loads(args.meta.read_text())
    with atomic_dir(args.out_dir) as tmp:
        write_report(tmp, runs, test, load_params(), meta)
    print(f"report: {args.out_dir / 'report.md'}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
