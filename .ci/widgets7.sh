#!/usr/bin/env bash
# Run the widget notebooks with ipywidgets 7.7.1, the version Colab ships, as well as 8.
#
# .venv-widgets7 is a thin overlay on .venv: its own site-packages holds only
# ipywidgets 7.7.1 and the two packages that version needs in another version
# (widgetsnbextension 3.6, ipython_genutils); everything else, torch included,
# comes from .venv through a .pth file, so the pins are the same and nothing
# big is installed twice. Packages in the overlay come first on sys.path.
# pip's resolver is asked first whether 7.7.1 installs with the pinned set
# (requirements/constraints.txt with the ipywidgets pin swapped).
#
# Usage: .ci/widgets7.sh [NOTEBOOK ...]   (default: every notebook in notebooks/
#        whose code imports ipywidgets or uses the course's widgets)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)

BASE=.venv
VENV=.venv-widgets7
IPYW=7.7.1
[ -x "$BASE/bin/python" ] || make install

# 1. Would ipywidgets 7.7.1 resolve with the course's pins? (pip's resolver, no download of torch)
constraints=$(mktemp)
trap 'rm -f "$constraints"' EXIT
grep -v '^ipywidgets==' requirements/constraints.txt > "$constraints"
echo "ipywidgets==$IPYW" >> "$constraints"
"$BASE/bin/python" -m pip install --quiet --dry-run --ignore-installed -c "$constraints" \
    "ipywidgets==$IPYW" jupyterlab ipykernel nbval >/dev/null 2>&1 \
    || { echo "widgets7: ipywidgets $IPYW does not resolve with requirements/constraints.txt" >&2; exit 1; }

# 2. The overlay venv (re-created only when missing or stale).
site_base=$("$BASE/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if ! "$VENV/bin/python" -c "import ipywidgets, torch, course_utils; assert ipywidgets.__version__ == '$IPYW'" 2>/dev/null; then
    rm -rf "$VENV"
    "$BASE/bin/python" -m venv --without-pip "$VENV"
    site7=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
    "$BASE/bin/python" -m pip install --quiet --no-deps --target "$site7" \
        "ipywidgets==$IPYW" "widgetsnbextension~=3.6.0" "ipython_genutils~=0.2.0"
    # addsitedir also runs .venv's own .pth files (the editable course_utils install)
    echo "import site; site.addsitedir('$site_base')" > "$site7/zz_base_venv.pth"
fi
"$VENV/bin/python" - <<EOF
import ipywidgets, ipykernel, torch, course_utils
assert ipywidgets.__version__ == "$IPYW", ipywidgets.__version__
print(f"widgets7 env: ipywidgets {ipywidgets.__version__} ({ipywidgets.__file__}), "
      f"ipykernel {ipykernel.__version__}, torch {torch.__version__}")
EOF

# 3. The widget notebooks, chosen by what their code does (works for notebooks added later).
if [ "$#" -gt 0 ]; then
    notebooks=("$@")
else
    mapfile -t notebooks < <("$BASE/bin/python" - <<'EOF'
import re, pathlib, nbformat
# imports ipywidgets, or calls a course widget (cu.lab(...), cu.widgets..., cu.finetune_lab(...));
# the Colab setup cell only names ipywidgets as a package to install, so it is left out
pattern = re.compile(r"^\s*(?:import|from)\s+ipywidgets\b|\bcu\.\w*(?:lab|widget)\w*\b", re.M)
for path in sorted(pathlib.Path("notebooks").glob("*.ipynb")):
    nb = nbformat.read(path, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code" and not c.source.startswith("# COLAB SETUP")]
    if any(pattern.search(src) for src in code):
        print(path)
EOF
)
fi
if [ "${#notebooks[@]}" -eq 0 ]; then
    echo "widgets7: no notebook uses widgets yet; nothing to run"
    exit 0
fi
echo "widgets7: running ${notebooks[*]} with ipywidgets $IPYW"
COURSE_QUICK=1 "$VENV/bin/python" -m pytest -p no:cacheprovider -q --nbval-lax --nbval-current-env "${notebooks[@]}"
echo "widgets7: done in $(( $(date +%s) - start )) s"
