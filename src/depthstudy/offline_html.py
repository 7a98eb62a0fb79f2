"""Write an offline page template for `dvc plots show`: Vega, Vega-Lite and vega-embed inlined, no CDN.

DVC's default page loads those libraries from a CDN, so without a network it shows nothing. The page written here
carries them (~0.9 MB, from vl-convert's bundle) and is named by DVC's `plots.html_template` config, which DVC
resolves relative to `.dvc/` (so `.dvc/config` says `html_template = plots/offline.html`). The page is committed,
so `dvc plots show` works in any clone with nothing run first; tests/test_plots_offline.py checks that it is what
this module generates. After upgrading vl-convert-python, regenerate it:

    python -m depthstudy.offline_html .dvc/plots/offline.html
"""

import argparse
from pathlib import Path

import vl_convert

from depthstudy.files import atomic_path

# DVC writes each plot as `<div id=…><script>var spec = …; vegaEmbed('#…', spec);</script></div>`, run while the
# page is parsed. vl-convert's bundle is an ES module, and module scripts run only after parsing: so a stub
# vegaEmbed queues those calls, and the bundle's entry snippet replays them once the real one exists.
QUEUE_STUB = """window.dvcPendingEmbeds = [];
      window.vegaEmbed = (...args) =>
        new Promise((resolve, reject) => window.dvcPendingEmbeds.push([args, resolve, reject]));"""

REPLAY_SNIPPET = """window.vega = vega;
window.vegaLite = vegaLite;
window.vegaEmbed = vegaEmbed;
for (const [args, resolve, reject] of window.dvcPendingEmbeds.splice(0)) {
  vegaEmbed(...args).then(resolve, reject);
}
"""

# {refresh_tag} and {plot_divs} are DVC's placeholders; {scripts} (the CDN <script> tags) is left out on purpose.
PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
    <script>
      @QUEUE_STUB@
    </script>
    <script type="module">
@BUNDLE@
    </script>
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""

# Text that would end the inline <script> early, or that DVC would substitute inside the JavaScript.
FORBIDDEN_IN_BUNDLE = ("</script", "<!--", "{plot_divs}", "{scripts}", "{refresh_tag}")


def latest_vegalite_v5() -> str:
    """The newest Vega-Lite 5.x that vl-convert ships: DVC's templates declare the v5 schema."""
    versions = [v for v in vl_convert.get_vegalite_versions() if v.startswith("5.")]
    return max(versions, key=lambda v: tuple(int(part) for part in v.split(".")))


def render_page() -> str:
    """The page template: DVC's placeholders plus the inlined libraries."""
    bundle = vl_convert.javascript_bundle(snippet=REPLAY_SNIPPET, vl_version=latest_vegalite_v5())
    found = [text for text in FORBIDDEN_IN_BUNDLE if text in bundle.lower()]
    if found:
        raise RuntimeError(f"vl-convert's bundle contains {found}: it cannot be inlined in the page as is")
    return PAGE.replace("@QUEUE_STUB@", QUEUE_STUB).replace("@BUNDLE@", bundle)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, help="where to write the page (e.g. .dvc/plots/offline.html)")
    args = parser.parse_args(argv)
    page = render_page()
    with atomic_path(args.path) as tmp:
        tmp.write_text(page, encoding="utf-8")
    print(f"wrote {args.path} ({len(page) / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
