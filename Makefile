# Two commands for a fresh machine:
#   make lab    set up (once) and open the course in JupyterLab
#   make test   set up (once) and run every test (what CI runs): the quick suite, then the
#               notebooks in full mode (the students' default) and once more in the same folder
# The two halves: make test-quick (about 21 minutes on 2 cores), make test-full (about 20).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS := requirements/constraints.txt
STAMP := $(VENV)/.installed
KERNEL := normalization-course
# two workers: the notebook runs are independent processes
PYTEST_ARGS ?= -n 2

.PHONY: lab test test-quick test-full install kernel release clean-data git-filter site

# JupyterLab refuses to start as root (containers, rented GPU machines) unless told to.
IS_ROOT ?= $(shell [ "$$(id -u)" = 0 ] && echo yes)
LAB_ARGS ?=
# Notebook and cell metadata that editors add and the course's policy does not keep
# (tests/test_hygiene.py is the gate; the filter saves a failed commit).
NBSTRIP_EXTRA := metadata.colab metadata.vscode metadata.accelerator metadata.gpuClass metadata.toc \
	metadata.celltoolbar cell.metadata.colab cell.metadata.id cell.metadata.outputId \
	cell.metadata.executionInfo cell.metadata.pycharm cell.metadata.jupyter cell.metadata.editable \
	cell.metadata.deletable cell.metadata.slideshow

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-installs only when the package list or the pins change.
# nbgrader (an instructors' tool, in the test extra for the round-trip test) would add its
# assignment and grading panels to the students' JupyterLab; they are switched off in this venv.
NBGRADER_SERVER_EXTS := formgrader validate_assignment assignment_list course_list
$(STAMP): $(PY) pyproject.toml $(CONSTRAINTS)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[test]"
	$(VENV)/bin/jupyter labextension disable --level=sys_prefix @jupyter/nbgrader >/dev/null 2>&1
	$(VENV)/bin/jupyter server extension disable --sys-prefix \
		$(addprefix nbgrader.server_extensions.,$(NBGRADER_SERVER_EXTS)) >/dev/null 2>&1
	@$(MAKE) --no-print-directory git-filter
	touch $(STAMP)

# Strip outputs, execution counts and editor metadata from notebooks as they are
# staged (nbstripout as a git filter, this clone only); --keep-id keeps cell ids stable.
# Test fixtures are stored as they are: a Colab-saved submission must keep Colab's metadata.
FIXTURE_ATTR := tests/fixtures/*.ipynb -filter
git-filter:
	@if git rev-parse --git-dir >/dev/null 2>&1; then \
		$(PY) -m nbstripout --install && \
		git config filter.nbstripout.clean '"$(abspath $(PY))" -m nbstripout --keep-id' && \
		git config filter.nbstripout.extrakeys "$(NBSTRIP_EXTRA)" && \
		attrs="$$(git rev-parse --git-path info/attributes)" && \
		{ grep -qxF '$(FIXTURE_ATTR)' "$$attrs" || echo '$(FIXTURE_ATTR)' >> "$$attrs"; } && \
		echo "git filter: notebooks are stripped of outputs when staged (nbstripout)"; \
	fi

install: $(STAMP)

kernel: $(STAMP)
	$(PY) -m ipykernel install --user --name $(KERNEL) --display-name "Python (normalization course)" >/dev/null

lab: kernel
	@if [ -n "$(IS_ROOT)" ]; then echo "Running as root: starting JupyterLab with --allow-root."; fi
	$(VENV)/bin/jupyter lab $(if $(IS_ROOT),--allow-root) $(LAB_ARGS) notebooks/

test: test-quick test-full

test-quick: $(STAMP)
	COURSE_QUICK=1 $(PY) -m pytest $(PYTEST_ARGS)

# Full mode, what students run: every notebook top to bottom under nbval; then, in the same folder,
# every notebook run twice in one kernel (quick mode is enough there: it proves that neither what the
# first pass left on disk, checkpoints and the lab's log, nor what a first round left in the kernel,
# as after running cells out of order, breaks anything). One notebook per worker (--dist loadfile keeps a
# notebook's cells in order), one thread per kernel; a cell may pretrain the course's model, so the
# cell limit is generous. Per-cell times are listed (--durations=0) to keep README's table honest.
# course_utils.nbval_plugin lets a busy kernel take longer than nbval's fixed 5 s to flush its output.
NB_ENV := PYTHONHASHSEED=0 MPLBACKEND=agg OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
NBVAL_ARGS := -p no:cacheprovider -p course_utils.nbval_plugin --nbval-lax --nbval-cell-timeout 2400 -n 2 --dist loadfile
test-full: $(STAMP)
	@# the course's full-mode model first, with both cores (01 would pretrain it on first use)
	env -u COURSE_QUICK $(PY) -c "import course_utils as cu; cu.load_pretrained_resnet18('course')"
	cd notebooks && env -u COURSE_QUICK $(NB_ENV) $(abspath $(PY)) -m pytest $(NBVAL_ARGS) --durations=0 [0-9][0-9]_*.ipynb
	COURSE_QUICK=1 $(PY) -m pytest -m rerun -n 2 --dist loadfile tests/test_notebooks.py

# The executed course as static HTML pages in site/ (course_utils/site.py says why nbconvert);
# full mode unless COURSE_QUICK=1. Two notebooks at once, one thread each.
site: $(STAMP)
	PYTHONHASHSEED=0 $(PY) -m course_utils.site notebooks/ site/ --jobs 2

# Student version of every notebook, for instructors (see README).
release: $(STAMP)
	$(PY) -m course_utils.release notebooks/ release/
