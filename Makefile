# Two commands for a fresh machine:
#   make lab    set up (once) and open the course in JupyterLab
#   make test   set up (once) and run the whole test suite in quick mode
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CONSTRAINTS := requirements/constraints.txt
STAMP := $(VENV)/.installed
KERNEL := normalization-course
# two workers: the notebook runs are independent processes
PYTEST_ARGS ?= -n 2

.PHONY: lab test install kernel release clean-data

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

# Re-installs only when the package list or the pins change.
$(STAMP): $(PY) pyproject.toml $(CONSTRAINTS)
	$(PY) -m pip install --quiet -c $(CONSTRAINTS) -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

kernel: $(STAMP)
	$(PY) -m ipykernel install --user --name $(KERNEL) --display-name "Python (normalization course)" >/dev/null

lab: kernel
	$(VENV)/bin/jupyter lab notebooks/

test: $(STAMP)
	COURSE_QUICK=1 $(PY) -m pytest $(PYTEST_ARGS)

# Student version of every notebook, for instructors (see README).
release: $(STAMP)
	$(PY) -m course_utils.release notebooks/ release/
