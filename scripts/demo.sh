#!/usr/bin/env bash
# The README's first command: set up .venv if needed, then run the whole pipeline offline on the digits sample
# at settings a 2-core CPU finishes in a few minutes, as a DVC experiment named "demo".
source "$(dirname "$0")/env.sh"

# `dvc exp run` commits the experiment to a hidden git ref, which needs an identity.
if [ -z "$(git config user.email || true)" ]; then
  export GIT_AUTHOR_NAME=depthstudy GIT_AUTHOR_EMAIL=depthstudy@localhost
  export GIT_COMMITTER_NAME=depthstudy GIT_COMMITTER_EMAIL=depthstudy@localhost
fi
dvc exp run --name "demo-$(date +%Y%m%d-%H%M%S)" \
  -S data.source=digits \
  -S train.epochs=8 \
  -S models.fc20.width=512 \
  -S models.fc56.width=512
echo
echo "Done. params.yaml now holds the demo's settings (git checkout params.yaml restores the seed's)."
echo "report:  plots/report/report.md"
echo "metrics: dvc exp show   |   charts: dvc plots show (then open dvc_plots/index.html)"
