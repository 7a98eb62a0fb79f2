"""depthstudy's performance benchmarks (issue 6): run `python benchmarks/run.py --help` from the project root."""
