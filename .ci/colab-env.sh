#!/usr/bin/env bash
# Build .venv-colab: Colab's own versions (requirements/colab.txt) on Colab's Python, with
# course_utils installed as Colab's setup cell installs it (--no-deps: nothing of it is upgraded),
# and nbval to run notebooks with: the quick suite grades every lesson's solution here, and runs the
# notebooks without exercises here (tests/test_notebooks.py, COURSE_COLAB_PYTHON).
#
# The Python: the version named in requirements/colab.txt ("# python: X.Y") from PATH or pyenv;
# where the machine has none, the nearest version it has, and this script says which.
# Re-built only when requirements/colab.txt or pyproject.toml changes (Makefile).
# Usage: .ci/colab-env.sh [VENV]   (default .venv-colab)
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
VENV=${1:-.venv-colab}
REQ=requirements/colab.txt
want=$(sed -n 's/^# python: *//p' "$REQ")
[ -n "$want" ] || { echo "colab-env: $REQ names no Python ('# python: X.Y')" >&2; exit 1; }

# every python3.N this machine has: on PATH and in pyenv
candidates=()
for dir in ${PATH//:/ } "${PYENV_ROOT:-$HOME/.pyenv}"/versions/*/bin; do
    for exe in "$dir"/python3.[0-9]*; do
        [[ -x "$exe" && "$exe" =~ python3\.[0-9]+$ ]] && candidates+=("$exe")
    done
done
python=""; best=99
for exe in "${candidates[@]}"; do
    minor=$("$exe" -c 'import sys; print(sys.version_info[1])' 2>/dev/null) || continue
    gap=$(( minor - ${want#3.} )); gap=${gap#-}
    if (( gap < best )); then best=$gap; python=$exe; fi
done
[ -n "$python" ] || { echo "colab-env: no python3.N found on PATH or in pyenv" >&2; exit 1; }
have=$("$python" -c 'import platform; print(platform.python_version())')
if (( best == 0 )); then
    echo "colab-env: Python $have ($python), as Colab"
else
    echo "colab-env: Colab runs Python $want, which this machine lacks: using the nearest, Python $have ($python)"
fi

# pip's output less the machine's notes about local package folders it does not have; pip's own
# exit status still decides (pipefail)
quiet() { grep -v "^WARNING: Location" || true; }

rm -rf "$VENV"
"$python" -m venv "$VENV"
"$VENV/bin/python" -m pip install --quiet --upgrade pip 2>&1 | quiet
# Colab's versions exactly (torch is the CUDA build, as on Colab; it runs on the CPU here)
"$VENV/bin/python" -m pip install --quiet -r "$REQ" 2>&1 | quiet
# the course as Colab's setup cell installs it (editable here, so the lane runs this working tree)
"$VENV/bin/python" -m pip install --quiet --no-deps -e . 2>&1 | quiet
# what the course's tests run the notebooks with (the grader's nbval): nothing the notebooks import,
# and the pins hold whatever it shares with them to Colab's versions
"$VENV/bin/python" -m pip install --quiet -c "$REQ" nbval pytest 2>&1 | quiet

# what was installed is what the file says, and nothing the course needs is missing
"$VENV/bin/python" - "$REQ" <<'EOF'
import importlib.metadata as md, re, sys
pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", open(sys.argv[1]).read(), re.M))
wrong = {name: md.version(name) for name, v in pins.items() if md.version(name).split("+")[0] != v}
assert not wrong, f"installed versions differ from {sys.argv[1]}: {wrong}"
import course_utils, torch, torchvision, ipywidgets, timm  # noqa: F401  (what the notebooks import)
print("colab-env: " + ", ".join(f"{n} {md.version(n)}" for n in pins))
EOF

touch "$VENV/.installed"
echo "colab-env: $VENV ready in $(( $(date +%s) - start )) s"
