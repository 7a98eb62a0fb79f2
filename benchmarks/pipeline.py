"""Part 3, the DVC pipeline: the reduced digits pipeline stage by stage, a no-op `dvc repro` vs `dvc status`, and
where one training stage's time goes.

Works in a temporary git repo copy of the project made the way the end-to-end tests make theirs
(tests/conftest.py: copy_project, write_params, E2E_PARAMS = the digits sample, 400 train / 100 test images,
3 epochs, FC width 64). Stage commands run as dvc.yaml has them: params.yaml's threads (0, one per core) and
this environment's OpenMP variables.
"""

import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from benchmarks.common import DVC, ROOT, header, interleave, median, pair_ratios, paired_ratio, spread, table

sys.path.insert(0, str(ROOT / "tests"))
from conftest import E2E_PARAMS, copy_project, git, write_params  # noqa: E402
from conftest import VENV_ENV as ENV  # noqa: E402

RUNNING = re.compile(r"Running stage '([^']+)'")
PROFILED_STAGE = "train_resnet18"


def make_repo(root: Path) -> Path:
    """A git repo copy of the project with the reduced settings committed."""
    repo = copy_project(root)
    write_params(repo, E2E_PARAMS)
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "reduced settings")
    return repo


def repro_stages(repo: Path) -> tuple[dict[str, float], float]:
    """Run a full `dvc repro`, timestamping its output as it streams → (stage → seconds, total seconds).

    A stage's time runs from DVC's "Running stage" line to the next one (or to the end), so it includes what DVC
    does after the command (hashing and caching outputs, writing dvc.lock). "(dvc start, before any stage)" is
    DVC's start-up and pipeline check before the first stage.
    """
    start = time.perf_counter()
    proc = subprocess.Popen([DVC, "repro"], cwd=repo, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    marks, lines = [("(dvc start, before any stage)", start)], []
    for line in proc.stdout:
        lines.append(line)
        if m := RUNNING.search(line):
            marks.append((m.group(1), time.perf_counter()))
    if proc.wait():
        raise RuntimeError("dvc repro failed:\n" + "".join(lines[-30:]))
    end = time.perf_counter()
    times = [t for _, t in marks[1:]] + [end]
    return {name: t1 - t0 for (name, t0), t1 in zip(marks, times)}, end - start


def timed_dvc(repo: Path, *args: str) -> float:
    """Seconds for one `dvc <args>`; fails if a no-op repro ran anything."""
    start = time.perf_counter()
    done = subprocess.run([DVC, *args], cwd=repo, env=ENV, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode or RUNNING.search(done.stdout):
        raise RuntimeError(f"dvc {' '.join(args)} was not a no-op:\n{done.stdout}\n{done.stderr}")
    return seconds


def profile_stage(repo: Path, stage: str) -> dict[str, float]:
    """Run ``stage``'s dvc.yaml command through stage_profile.py → phase → seconds, plus the process's wall time."""
    argv = shlex.split(yaml.safe_load((repo / "dvc.yaml").read_text())["stages"][stage]["cmd"])
    assert argv[:2] == ["python", "stages/train.py"], argv
    script = Path(__file__).resolve().parent / "stage_profile.py"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, str(script), *argv[2:]], cwd=repo, env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise RuntimeError(f"profiling {stage} failed:\n{done.stdout}\n{done.stderr}")
    phases = json.loads(done.stdout.strip().splitlines()[-1])
    phases["interpreter start + exit"] = wall - phases.pop("in-process total")
    phases["process wall time"] = wall
    return phases


def run(repeats: int, keep: bool = False) -> dict:
    """All three measurements in one temporary repo → {"stages", "total_s", "noop_ratio", "profile", …}."""
    header(f"3. Pipeline: reduced digits pipeline in a temporary repo, {repeats} interleaved no-op repeats")
    root = Path(tempfile.mkdtemp(prefix="depthstudy-bench-"))
    try:
        repo = make_repo(root)
        stages, total = repro_stages(repo)
        table([["stage (full `dvc repro`)", "seconds"]] + [[k, f"{v:.1f}"] for k, v in stages.items()]
              + [["total", f"{total:.1f}"]])
        seconds = interleave({"repro": lambda: timed_dvc(repo, "repro"), "status": lambda: timed_dvc(repo, "status")},
                             repeats)
        ratio = paired_ratio(seconds["repro"], seconds["status"])
        print()
        table([["everything up to date", "median s", "range s"],
               ["dvc repro", f"{median(seconds['repro']):.2f}", spread(seconds["repro"])],
               ["dvc status", f"{median(seconds['status']):.2f}", spread(seconds["status"])],
               ["repro ÷ status (paired)", f"{ratio:.2f}", spread(pair_ratios(seconds["repro"], seconds["status"]))]])
        profile = profile_stage(repo, PROFILED_STAGE)
        wall = profile["process wall time"]
        print(f"\n{PROFILED_STAGE}, its dvc.yaml command run alone (the same settings):")
        table([["phase", "seconds", "share"]] + [[k, f"{v:.2f}", f"{v / wall:.0%}"] for k, v in profile.items()])
        return {"stages": stages, "total_s": total, "repro_s": median(seconds["repro"]),
                "status_s": median(seconds["status"]), "noop_ratio": ratio, "profile": profile}
    finally:
        if keep:
            print(f"(kept {root})")
        else:
            shutil.rmtree(root, ignore_errors=True)
