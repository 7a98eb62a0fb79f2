"""Stage `report` (both pipelines): the Markdown report with PNG figures, from the metrics files alone.

Reads params.yaml, each model's metrics directory (curves, per-layer evidence, run info), evaluate's output directory
and the prepared splits' meta.json files; writes OUT_DIR/report.md with, for the depth study, learning_curves.png,
layers.png and confusion.png, or with --paper (paper/dvc.yaml: He et al. 2015's plain vs residual CIFAR nets), Fig. 6's
curves fig6_errors.png and our test errors beside Table 6.
Run: python stages/report.py plots/report metrics/fc20 metrics/fc56 metrics/resnet18 metrics/evaluate \
         --meta data/prepared/trainval/meta.json data/prepared/test/meta.json
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # this checkout's library (see README)

from depthstudy.errors import run_stage  # noqa: E402
from depthstudy.files import atomic_dir  # noqa: E402
from depthstudy.paper_report import write_paper_report  # noqa: E402
from depthstudy.params import load_params  # noqa: E402
from depthstudy.report import load_results, write_report  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("live_dirs", type=Path, nargs="+", help="the models' metrics directories")
    parser.add_argument("eval_dir", type=Path, help="evaluate's output directory")
    parser.add_argument("--meta", type=Path, nargs="+", required=True, help="the prepared splits' meta.json files")
    parser.add_argument("--paper", action="store_true", help="the paper pipeline's report (Fig. 6, Table 6)")
    args = parser.parse_args(argv)
    runs, test, eval_seconds, meta = load_results(args.live_dirs, args.eval_dir, args.meta)
    write = write_paper_report if args.paper else write_report
    with atomic_dir(args.out_dir) as tmp:
        write(tmp, runs, test, eval_seconds, load_params(), meta)
    print(f"report: {args.out_dir / 'report.md'}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
