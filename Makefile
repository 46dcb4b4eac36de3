# Fresh clone -> `make demo` or `make test`. Everything lands in .venv.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch/torchvision pinned to the wheels this project is developed against; override
# (e.g. TORCH="torch torchvision --index-url ...") for another CUDA build.
TORCH  ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
DATA   ?= data/synth
RUNS   ?= runs

.PHONY: install demo test clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[cpu,dev]"
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 -q

# Each stage is a file target, so a second `make demo` reuses what is finished.
$(DATA)/train.json: $(STAMP)
	$(BIN)/sadc data synth $(DATA)

$(RUNS)/quickstart-teacher/best.pt: $(DATA)/train.json recipes/quickstart-teacher.yaml
	$(BIN)/sadc train --recipe recipes/quickstart-teacher.yaml --resume

demo: $(RUNS)/quickstart-teacher/best.pt
	$(BIN)/sadc bench $(RUNS)/quickstart-teacher/best.pt --data $(DATA)/val.json --images $(DATA)/val --out $(RUNS)/quickstart-teacher/bench

clean:
	rm -rf $(VENV) $(RUNS) $(DATA)
