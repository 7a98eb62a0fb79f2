"""Stage `report` of the paper pipeline (paper/dvc.yaml): He et al. 2015's Fig. 6 and Table 6 beside our numbers.

Reads params.yaml (paper/params.yaml: DVC runs this stage in paper/), each model's metrics directory (curves, run
info), evaluate's output directory and the prepared splits' meta.json files; writes OUT_DIR/report.md and
fig6_errors.png (training and validation error per epoch, one colour per depth, dashed for plain nets).
Run, in paper/: python ../stages/paper_report.py plots/report metrics/plain20 metrics/plain56 metrics/resnet20 \\
         metrics/resnet56 metrics/evaluate --meta ../data/prepared/trainval/meta.json ../data/prepared/test/meta.json
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library (see README)

from depthstudy.errors import run_stage  # noqa: E402
from depthstudy.files import atomic_dir  # noqa: E402
from depthstudy.paper_report import write_paper_report  # noqa: E402
from depthstudy.params import load_params  # noqa: E402
from depthstudy.report import load_results  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("live_dirs", type=Path, nargs="+", help="the models' metrics directories")
    parser.add_argument("eval_dir", type=Path, help="evaluate's output directory")
    parser.add_argument("--meta", type=Path, nargs="+", required=True, help="the prepared splits' meta.json files")
    args = parser.parse_args(argv)
    runs, test, eval_seconds, meta = load_results(args.live_dirs, args.eval_dir, args.meta)
    with atomic_dir(args.out_dir) as tmp:
        write_paper_report(tmp, runs, test, eval_seconds, load_params(), meta)
    print(f"report: {args.out_dir / 'report.md'}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
