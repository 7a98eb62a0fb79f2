"""`dvc plots show/diff` with the project's templates: every overlay chart carries the three models, and the offline
page (depthstudy.offline_html) renders every plot in headless Chromium with no network at all."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from conftest import REPO, ROOT_PLOTS, dvc
from depthstudy.offline_html import render_page

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
MODELS = {"fc20", "fc56", "resnet18"}
OVERLAY_TEMPLATES = {"by_model", "by_layer"}


def run(cwd: Path, *cmd: str) -> str:
    done = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"{' '.join(cmd)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


def declared_plots(repo: Path) -> dict[str, dict]:
    """dvc.yaml's top-level plots: {title: properties}."""
    entries = yaml.safe_load((repo / "dvc.yaml").read_text())["plots"]
    return {name: props for entry in entries for name, props in entry.items()}


def model_of(filename: str) -> str:
    """The model a datapoint belongs to, read from its file name as the templates read it."""
    return re.sub(r"^metrics/", "", filename).split("/")[0]


def html_id(title: str) -> str:
    """The id DVC gives a plot's <div> (dvc_render's Renderer.remove_special_chars)."""
    return title.translate({ord(c): "_" for c in r"!@#$%^&*()[]{};,<>?\/:.|`~=_+ "})


def plot_divs(dom: str, titles: list[str]) -> dict[str, str]:
    """Split the rendered page's DOM into each plot's <div> (they are siblings, in the order DVC wrote them)."""
    starts = sorted((dom.index(f'<div id="{html_id(t)}"'), t) for t in titles)
    ends = [start for start, _ in starts[1:]] + [len(dom)]
    return {title: dom[start:end] for (start, title), end in zip(starts, ends)}


def line_colours(div: str) -> dict[str, set[str]]:
    """{model: stroke colours} of the line marks Vega drew (their aria-labels name the model)."""
    colours: dict[str, set[str]] = {}
    for tag in re.findall(r'<path [^>]*aria-roledescription="line mark"[^>]*>', div):
        model = re.search(r"model: ([^;\"]+)", tag).group(1)
        colours.setdefault(model, set()).add(re.search(r'stroke="([^"]+)"', tag).group(1))
    return colours


@pytest.fixture(scope="module")
def repo(pipeline) -> Path:
    """The end-to-end repo (all stages run, results committed): a copy of the tracked files, nothing generated."""
    repo, _ = pipeline
    return repo


def test_committed_page_template_is_what_the_code_generates():
    """`dvc plots show` works in a fresh clone because the page is committed; it must not drift from its source."""
    template = REPO / ".dvc" / dvc(REPO, "config", "plots.html_template").strip()
    tracked = subprocess.run(["git", "ls-files", "--error-unmatch", str(template)], cwd=REPO, capture_output=True)
    assert tracked.returncode == 0, f"{template} is not tracked by git"
    assert template.read_text(encoding="utf-8") == render_page(), (
        f"{template} is stale: run python -m depthstudy.offline_html {template.relative_to(REPO)}")


def overlays(repo: Path) -> list[str]:
    titles = [t for t, props in declared_plots(repo).items() if props.get("template") in OVERLAY_TEMPLATES]
    assert titles, "dvc.yaml declares no plot with the by_model or by_layer template"
    return titles


def test_show_json_overlays_every_model(repo):
    shown = json.loads(dvc(repo, "plots", "show", "--json", ROOT_PLOTS))  # the paper pipeline's: not run here
    assert "errors" not in shown, shown["errors"]
    assert set(shown["data"]) == set(declared_plots(repo))
    for title in overlays(repo):
        values = shown["data"][title][0]["content"]["data"]["values"]
        assert {model_of(v["filename"]) for v in values} == MODELS, title


def test_diff_keeps_models_apart_per_revision(repo):
    diffed = json.loads(dvc(repo, "plots", "diff", "HEAD", "--json", "--targets", ROOT_PLOTS))
    assert "errors" not in diffed, diffed["errors"]
    for title in overlays(repo):
        values = diffed["data"][title][0]["content"]["data"]["values"]
        pairs = {(v["rev"], model_of(v["filename"])) for v in values}
        assert pairs == {(rev, m) for rev in ("workspace", "HEAD") for m in MODELS}, title


@pytest.mark.skipif(not CHROMIUM.exists(), reason=f"{CHROMIUM} is absent (apt-get install chromium)")
def test_offline_page_renders_every_plot(repo, tmp_path):
    dvc(repo, "plots", "show", "-o", str(tmp_path / "out"))
    page = tmp_path / "out" / "index.html"
    assert "cdn.jsdelivr" not in page.read_text(encoding="utf-8")
    dom = run(
        repo,
        str(CHROMIUM),
        "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run",
        "--host-resolver-rules=MAP * ~NOTFOUND",  # no name resolves: the page must need no network
        f"--user-data-dir={tmp_path / 'chromium'}", "--virtual-time-budget=10000",
        "--dump-dom", page.as_uri(),
    )
    titles = list(declared_plots(repo))
    divs = plot_divs(dom, titles)
    for title, div in divs.items():
        assert re.search(r'<(svg|canvas)\b[^>]*class="marks"', div), f"{title}: not rendered"
    for title in overlays(repo):
        colours = line_colours(divs[title])
        assert set(colours) == MODELS, (title, colours)
        assert all(len(c) == 1 for c in colours.values()), f"{title}: a model drawn in several colours {colours}"
        assert len(set.union(*colours.values())) == len(MODELS), f"{title}: models share a colour {colours}"
