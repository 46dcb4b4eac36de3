# Fresh clone -> `make demo` or `make test`. Everything lands in .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch/torchvision pinned to the wheels this project is developed against; override
# (e.g. TORCH="torch torchvision --index-url ...") for another CUDA build.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
DATA   ?= data/synth
TEACHER := runs/quickstart-teacher
STUDENT := runs/quickstart

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[cpu,dev,tb]"
	touch $(STAMP)

# Lint, format check, types, then the suite (the `slow` tests included). FORMAT_CHECK=0 skips
# `ruff format --check`.
FORMAT_CHECK ?= 1
test: $(STAMP)
	$(BIN)/ruff check sadc tests benchmarks
ifneq ($(FORMAT_CHECK),0)
	$(BIN)/ruff format --check sadc tests benchmarks
endif
	$(BIN)/mypy sadc
	$(BIN)/python -m pytest -n 2 -q

# Every stage is idempotent: synth and export skip when their output is current, train
# and distill --resume finish an interrupted run or do nothing when it is complete.
# STAGE prefixes each stage's command; to log their wall times (README's table):
#   make demo STAGE="$(BIN)/python -m benchmarks.stage_time --log demo-times.txt"
STAGE ?=
demo: $(STAMP)
	$(STAGE) $(BIN)/sadc data synth $(DATA)
	$(STAGE) $(BIN)/sadc train --recipe recipes/quickstart-teacher.yaml --resume
	$(STAGE) $(BIN)/sadc distill --recipe recipes/quickstart.yaml --resume
	test $(STUDENT)/best.int8.onnx -nt $(STUDENT)/best.pt || \
	  $(STAGE) $(BIN)/sadc export $(STUDENT)/best.pt --format int8 --int8-target cpu --calib $(DATA)/unlabeled --val $(DATA)/val.json
	$(STAGE) $(BIN)/sadc bench $(TEACHER)/best.pt $(STUDENT)/best.pt $(STUDENT)/best.onnx $(STUDENT)/best.int8.onnx \
	  --data $(DATA)/val.json --out $(STUDENT)/bench

clean:
	rm -rf $(VENV) runs $(DATA)
