# The two commands of the README: `make demo` and `make test`. Both create .venv when it is missing.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# DeepSpeed's accelerator: cuda where an NVIDIA GPU is visible, else cpu (a GPU host must not train on its CPU)
export DS_ACCELERATOR ?= $(shell nvidia-smi -L >/dev/null 2>&1 && echo cuda || echo cpu)

.PHONY: install test test-fast demo bench clean

install: $(STAMP)

# torch/torchvision come pinned from constraints.txt (local wheels here); deepspeed is built against that torch,
# so it is installed without build isolation (an isolated build would fetch a second, CUDA torch).
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip setuptools wheel
	$(BIN)/pip install -q -c constraints.txt torch torchvision
	$(BIN)/pip install -q -c constraints.txt --no-build-isolation deepspeed
	$(BIN)/pip install -q -c constraints.txt -e ".[dev]"
	# the test-only BasicSR reference of tasks.blind: its own pins would add a second OpenCV and tb-nightly,
	# and its tests read only degradations.py (numpy, scipy, OpenCV, torch: all installed above)
	$(BIN)/pip install -q -c constraints.txt --no-deps --no-build-isolation basicsr-fixed==1.4.2
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

demo: $(STAMP)
	$(BIN)/python -m finetune.demo $(if $(DATA),--data $(DATA),)

bench: $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e ".[bench]"
	$(BIN)/python tests/benchmarks/run_all.py

clean:
	rm -rf $(VENV) demo-out runs
