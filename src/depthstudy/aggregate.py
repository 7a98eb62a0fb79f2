"""Pool seeds: each model's final validation and test accuracy per configuration, mean ± std over seeds (and n), from
`dvc exp show --json`: a table, the findings with the seed-to-seed spread, and a figure with error bars.

Run in the project once queued seeds have finished (README, "Why FC56 fails: ablations and seeds"):
    python -m depthstudy.aggregate                       # runs `dvc exp show --json` in the current directory
    python -m depthstudy.aggregate --json-file exps.json --plot plots/aggregate.png

Rules:
- Rows: the baseline commit and its experiments as `dvc exp show` lists them (HEAD's; for other commits save
  `dvc exp show --json -A` and pass it with --json-file), then the workspace. Queued, running and failed
  experiments, and rows without a model's val and test accuracy, are skipped with a note.
- A configuration is every param but `train.seed` (what is pooled), `train.threads` and `train.device` (they
  change the order of floating-point sums and the random streams, not what is trained: run-to-run variation of the
  kind the seeds measure, so it belongs in the spread, not in the configuration) and `data.url` (the bytes are
  checked against `data.md5`); plus the code: runs whose .py deps in dvc.lock differ are never pooled.
- One run per seed and configuration: a second row with the same seed (the workspace after `dvc exp run` or
  `dvc exp apply`, an experiment restored from the run-cache) is the same result, not another replicate; the first
  listed is counted, and a note says so (and whether the two disagree).
"""

import argparse
import hashlib
import json
import math
import shutil
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from depthstudy.archive import DIGITS_TEST_SIZE, NUM_CLASSES
from depthstudy.errors import UserError, run_stage
from depthstudy.figures import plot_aggregate
from depthstudy.findings import ModelEvidence, chance_finding, mean_std, ranking_finding
from depthstudy.params import parse_params
from depthstudy.report import markdown

POOLED = "train.seed"
IGNORED = ("train.threads", "train.device", "data.url")
SPLITS = ("val", "test")
SOURCE_SIZES = {"cifar10": (50_000, 10_000), "digits": (1_797 - DIGITS_TEST_SIZE, DIGITS_TEST_SIZE)}  # train, test


@dataclass(frozen=True)
class Row:
    """One finished run as `dvc exp show` lists it."""

    label: str  # experiment name, baseline branch or short rev, or "workspace"
    params: dict  # dotted key → value, e.g. "models.fc56.norm" → "layernorm"
    acc: dict[str, dict[str, float]]  # model → {"val": final validation accuracy, "test": test accuracy}
    code: str  # a digest of the .py deps' hashes in dvc.lock

    @property
    def config(self) -> tuple:
        return tuple(sorted((k, json.dumps(v)) for k, v in self.params.items() if k != POOLED and k not in IGNORED))


def exp_show(json_file: Path | None) -> list:
    """`dvc exp show --json`'s output: read from ``json_file``, or run dvc in the current directory."""
    if json_file is not None:
        try:
            text, source = json_file.read_text(), str(json_file)
        except OSError as e:
            raise UserError(f"cannot read {json_file}: {e.strerror}") from None
    else:
        if shutil.which("dvc") is None:
            raise UserError("dvc not found on PATH: activate the project's environment, or pass --json-file")
        done = subprocess.run(["dvc", "exp", "show", "--json"], capture_output=True, text=True)
        if done.returncode != 0:
            last = ([line for line in done.stderr.splitlines() if line.strip()] or ["(no message)"])[-1]
            raise UserError(f"`dvc exp show --json` failed: {last.strip()}")
        text, source = done.stdout, "`dvc exp show --json`"
    try:
        shown = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{source} is not JSON ({e})") from None
    if not isinstance(shown, list) or not all(isinstance(r, dict) and "rev" in r and "data" in r for r in shown):
        raise UserError(f"{source} is not `dvc exp show --json` output (a list of revisions with 'rev' and 'data')")
    return shown


def flatten(tree: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def to_row(label: str, state: dict, models: list[str] | None = None) -> Row | str:
    """A finished run's row with the accuracies of ``models`` (default: all), or why it cannot be counted."""
    data = state.get("data") or {}
    if state.get("error") or not data:
        return f"{label}: {(state.get('error') or {}).get('msg', 'no data')}"
    params = {}
    for file, result in (data.get("params") or {}).items():
        prefix = "" if file == "params.yaml" else f"{file}:"
        params.update(flatten(result.get("data") or {}, prefix))
    acc: dict[str, dict[str, float]] = {}
    for result in (data.get("metrics") or {}).values():
        for model, values in (result.get("data") or {}).items():
            for split in SPLITS:
                value = values.get(split) if isinstance(values, dict) else None
                if isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 1:
                    acc.setdefault(model, {})[split] = float(value)
    acc = {model: a for model, a in acc.items() if set(a) == set(SPLITS) and (not models or model in models)}
    if not acc:
        return f"{label}: no {'such ' * bool(models)}model with both a val and a test accuracy"
    code = sorted((path, dep.get("hash")) for path, dep in (data.get("deps") or {}).items() if path.endswith(".py"))
    return Row(label, params, acc, hashlib.sha256(json.dumps(code).encode()).hexdigest()[:7])


def collect(shown: list, models: list[str] | None = None) -> tuple[list[Row], list[str]]:
    """Every finished run, baseline commits and their experiments first, the workspace last, with the accuracies
    of ``models`` (default: all); and notes on what was skipped."""
    rows, skipped, unusable = [], {}, []
    workspace = [s for s in shown if s["rev"] == "workspace"]
    for baseline in [s for s in shown if s["rev"] != "workspace"] + workspace:
        rev = baseline["rev"]
        found = [to_row(baseline.get("name") or (rev if rev == "workspace" else rev[:7]), baseline, models)]
        for exp in baseline.get("experiments") or []:
            head = (exp.get("revs") or [{}])[0]  # the experiment's last commit
            name = exp.get("name") or str(head.get("rev"))[:7]
            state = (exp.get("executor") or {}).get("state") or "success"  # a workspace `dvc exp run` has no executor
            if state == "success":
                found.append(to_row(name, head, models))
            else:
                skipped.setdefault(state, []).append(name)
        rows += [r for r in found if isinstance(r, Row)]
        unusable += [r for r in found if isinstance(r, str)]
    notes = [f"note: skipped {state} experiment(s): {', '.join(names)}" for state, names in skipped.items()]
    notes += [f"note: skipped {reason}" for reason in unusable]
    return rows, notes


def group(rows: list[Row]) -> tuple[dict[tuple, list[Row]], list[str]]:
    """Configuration → its runs, one per seed (the first listed); notes on the repeats left out."""
    groups: dict[tuple, dict] = {}
    notes = []
    for row in rows:
        seeds = groups.setdefault((row.config, row.code), {})
        seed = row.params.get(POOLED)
        if seed in seeds:
            first = seeds[seed]
            same = "the same accuracies" if first.acc == row.acc else "different accuracies (another machine?)"
            notes.append(f"note: {row.label} repeats {first.label} (same configuration, code and seed {seed}, "
                         f"{same}): counted once")
        else:
            seeds[seed] = row
    by_seed = {key: sorted(seeds.values(), key=lambda r: _order(r.params.get(POOLED))) for key, seeds in groups.items()}
    return by_seed, notes


def _order(seed) -> tuple:
    return (0, seed, "") if isinstance(seed, (int, float)) else (1, 0, str(seed))


def labels(groups: dict[tuple, list[Row]]) -> dict[tuple, str]:
    """Each configuration named by the params (and code) in which it differs from the first one, the reference (the
    baseline commit's, when it finished): `key=value, …`, as `dvc exp run -S` takes them."""
    keys = list(groups)
    ref, ref_code = dict(keys[0][0]), keys[0][1]
    out = {keys[0]: f"reference: {groups[keys[0]][0].label}"}
    for config, code in keys[1:]:
        p = dict(config)
        parts = [f"{k}={_value(p[k]) if k in p else '(unset)'}" for k in sorted(set(p) | set(ref))
                 if p.get(k) != ref.get(k)]
        out[(config, code)] = ", ".join(parts + ([f"code {code}"] if code != ref_code else []))
    return out


def _value(dumped: str) -> str:
    """A param's value as `dvc exp run -S` takes it: strings bare, the rest as JSON (true, null, 0.001)."""
    value = json.loads(dumped)
    return value if isinstance(value, str) else dumped


def split_sizes(params: dict) -> tuple[int, int]:
    """(validation, test) images of a run, from its data params as depthstudy.prepare splits them: scikit-learn's
    train_test_split gives the float test_size ceil(fraction × n) images (tests/test_aggregate.py checks this)."""
    data = parse_params({"data": {k[5:]: v for k, v in params.items() if k.startswith("data.")}}).data
    n_train, n_test = SOURCE_SIZES[data.source]
    return math.ceil(data.val_fraction * (data.train_limit or n_train)), data.test_limit or n_test


def evidences(runs: list[Row]) -> list[ModelEvidence]:
    """One ModelEvidence per model, carrying each seed's accuracies (runs lacking the model are left out)."""
    n_val, n_test = split_sizes(runs[0].params)  # the data params are part of the configuration: equal in all
    models = dict.fromkeys(m for r in runs for m in r.acc)
    return [ModelEvidence(m, tuple(r.acc[m]["val"] for r in runs if m in r.acc), n_val,
                          tuple(r.acc[m]["test"] for r in runs if m in r.acc), n_test) for m in models]


def summary(groups: dict[tuple, list[Row]], names: dict[tuple, str]) -> pd.DataFrame:
    rows = []
    for key, runs in groups.items():
        for ev in evidences(runs):
            seeds = [r.params.get(POOLED) for r in runs if ev.name in r.acc]
            cells = {}
            for split, accs in (("val", ev.val_acc), ("test", ev.test_acc)):
                mean, std, n = mean_std(accs)
                cells[f"{split} acc (mean ± std)"] = f"{mean:.3f} ± {'–' if n == 1 else f'{std:.3f}'}"
            rows.append({"configuration": names[key], "model": ev.name, "n": str(len(seeds)),
                         "seeds": ", ".join(map(str, seeds)), **cells})
    return pd.DataFrame(rows)


def per_seed(groups: dict[tuple, list[Row]], names: dict[tuple, str]) -> pd.DataFrame:
    """One row per counted run and model: what the figure draws."""
    return pd.DataFrame([{"config": names[key], "model": m, **r.acc[m]}
                         for key, runs in groups.items() for r in runs for m in r.acc])


def findings_by_section(groups: dict[tuple, list[Row]], names: dict[tuple, str]) -> list[tuple[str, list[str]]]:
    """Per configuration, each model against chance and the models ranked; then, per model, its configurations
    ranked (which change restores training): depthstudy.findings' sentences. A model is compared across the
    configurations that differ in what its runs read (dvc.yaml: `data`, `train`, `models.<model>`; and the code),
    the first listed of each: an FC56 ablation leaves ResNet-18's runs as they were, reused, not new evidence."""
    sections, by_model = [], {}
    for key, runs in groups.items():
        evs = evidences(runs)
        lines = [chance_finding(e, NUM_CLASSES) for e in evs] + [ranking_finding(evs)]
        sections.append((f"Findings, {names[key]}", lines))
        for e in evs:
            own = tuple((k, v) for k, v in key[0] if k.startswith(("data.", "train.", f"models.{e.name}.")))
            by_model.setdefault(e.name, {}).setdefault((own, key[1]), replace(e, name=names[key]))
    for model, evs in by_model.items():
        if len(evs) > 1:
            sections.append((f"{model} across configurations", [ranking_finding(list(evs.values()))]))
    return sections


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json-file", type=Path, help="a saved `dvc exp show --json` output, instead of running dvc")
    parser.add_argument("--plot", type=Path, default=Path("plots/aggregate.png"), help="the error-bar figure's path")
    parser.add_argument("--model", action="append", help="only this model (repeatable; default: every model)")
    args = parser.parse_args(argv)
    rows, notes = collect(exp_show(args.json_file), args.model)
    if not rows:
        skips = "; ".join(n.removeprefix("note: ") for n in notes)
        raise UserError("no finished experiments with metrics in `dvc exp show`" + (f" ({skips})" if skips else ""))
    groups, repeats = group(rows)
    names = labels(groups)
    counted = sum(len(runs) for runs in groups.values())
    print(f"{counted} run(s) in {len(groups)} configuration(s), pooled over {POOLED} (one run per seed; not part of "
          f"a configuration: {', '.join(IGNORED)})")
    for note in notes + repeats:
        print(note)
    print("configurations are named by the params in which they differ from the first, the reference")
    print("\n" + markdown(summary(groups, names)))
    for title, lines in findings_by_section(groups, names):
        print(f"\n{title}:")
        print("\n".join(f"- {line}" for line in lines))
    args.plot.parent.mkdir(parents=True, exist_ok=True)
    plot_aggregate(per_seed(groups, names), args.plot, chance=1 / NUM_CLASSES)
    print(f"\nfigure: {args.plot}")


if __name__ == "__main__":
    sys.exit(run_stage(main))
