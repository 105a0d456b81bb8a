# Two commands for a fresh machine:
#   make lab    set up (once) and open the course in JupyterLab
#   make test   set up (once) and run every test (what CI runs): the quick suite, then the
#               notebooks in full mode (the students' default) and once more in the same kernel
# Measured on a fresh clone, 2 cores: 35 minutes in all, set-up included; make test-quick 13.6, make test-full
# 18.5 (3.3 of them pretraining the full-mode model). make test
# prints where the time went at the end (tests/report_times.py).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS := requirements/constraints.txt
STAMP := $(VENV)/.installed
KERNEL := normalization-course
# two workers: the notebook runs are independent processes
PYTEST_ARGS ?= -n 2 --dist worksteal

.PHONY: lab test test-quick test-full install kernel release clean-data git-filter site colab-env pretrained-quick pretrained-full

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

# Colab's own versions (requirements/colab.txt) on Colab's Python, course_utils installed --no-deps
COLAB_VENV := .venv-colab
COLAB_STAMP := $(COLAB_VENV)/.installed
$(COLAB_STAMP): requirements/colab.txt pyproject.toml .ci/colab-env.sh
	bash .ci/colab-env.sh $(COLAB_VENV)
colab-env: $(COLAB_STAMP)

# Every pass writes a JUnit report to $(REPORTS); `make test` ends with the table of where the time
# went (tests/report_times.py), printed whether the passes passed or not. First, while Colab's
# environment downloads and installs, .venv installs and the course's quick-mode model trains (the
# quick suite needs both).
REPORTS := build/test-reports
EXECUTED := build/executed
test:
	@rm -rf $(REPORTS) $(EXECUTED)
	@$(MAKE) --no-print-directory -j2 pretrained-quick colab-env && \
		$(MAKE) --no-print-directory test-quick && $(MAKE) --no-print-directory test-full; \
		status=$$?; $(PY) tests/report_times.py $(REPORTS); exit $$status

# The course's own ResNet-18s, trained once on real data and cached in data/checkpoints (01 would
# train one on first use, on one thread).
pretrained-quick: $(STAMP)
	COURSE_QUICK=1 $(PY) -c "import course_utils as cu; cu.load_pretrained_resnet18('course')"
pretrained-full: $(STAMP)
	env -u COURSE_QUICK $(PY) -c "import course_utils as cu; cu.load_pretrained_resnet18('course')"

# The quick suite. Each lesson's solution is graded with the Python of Colab's environment when it exists.
test-quick: $(STAMP)
	COURSE_QUICK=1 $(if $(wildcard $(COLAB_STAMP)),COURSE_COLAB_PYTHON=$(abspath $(COLAB_VENV))/bin/python) \
		$(PY) -m pytest $(PYTEST_ARGS) --junitxml=$(REPORTS)/quick.xml

# Full mode, what students run: every notebook top to bottom under nbval, then every code cell once
# more in the same kernel and folder in quick mode (--nbval-again-quick: it proves that neither what the
# first round left on disk, checkpoints and the lab's log, nor what it left in the kernel, as after
# running cells out of order, breaks anything). Each notebook is written with its full-mode outputs to
# $(EXECUTED) (--nbval-save-executed), and the site is built from those and checked: no lesson runs
# again for it. One notebook per worker (--dist loadfile keeps a notebook's cells in order), one thread
# per kernel, the longest lessons first (tests/notebook_times.py; --no-loadscope-reorder keeps that order,
# which xdist would otherwise replace by the number of cells); a generous cell limit.
# course_utils.nbval_plugin also lets a busy kernel take longer than nbval's fixed 5 s to flush its
# output. No MPLBACKEND=agg here: the site shows the figures the run drew.
NB_ENV := PYTHONHASHSEED=0 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
NBVAL_ARGS := -p no:cacheprovider -p course_utils.nbval_plugin --nbval-lax --nbval-cell-timeout 2400 -n 2 --dist loadfile \
	--no-loadscope-reorder
test-full: pretrained-full
	cd notebooks && env -u COURSE_QUICK $(NB_ENV) $(abspath $(PY)) -m pytest $(NBVAL_ARGS) --nbval-again-quick \
		--nbval-save-executed $(abspath $(EXECUTED)) --junitxml=$(abspath $(REPORTS))/full.xml \
		$$($(abspath $(PY)) $(abspath tests/notebook_times.py) [0-9][0-9]_*.ipynb)
	COURSE_EXECUTED_DIR=$(EXECUTED) $(PY) -m pytest -m site -p no:cacheprovider tests/test_site.py \
		--junitxml=$(REPORTS)/site.xml

# The executed course as static HTML pages in site/ (course_utils/site.py says why nbconvert);
# full mode unless COURSE_QUICK=1. Two notebooks at once, one thread each.
site: $(STAMP)
	PYTHONHASHSEED=0 $(PY) -m course_utils.site notebooks/ site/ --jobs 2

# Student version of every notebook, for instructors (see README).
release: $(STAMP)
	$(PY) -m course_utils.release notebooks/ release/
