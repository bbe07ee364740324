# Set-up and the main commands. Each target installs what is missing first.
#   make train   index, preprocess and train both models on the dataset folder, tune and evaluate them
#   make test    run the test suite (add PYTEST_ARGS='-m "not slow"' to skip the Ray Train runs)

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
BRAINTUMOR_DATA ?= ../shared/data/lgg/kaggle_3m
BRAINTUMOR_OUTPUT ?= outputs
PYTEST_ARGS ?=
# The release segmenter's architecture (docs/RESULTS.md, run 5); unet trains the other one.
SEGMENTER ?= resunet
export BRAINTUMOR_DATA BRAINTUMOR_OUTPUT

.PHONY: install train preprocess explore test clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test]'
	touch $@

preprocess: install
	$(BIN)/python jobs/preprocess.py --data $(BRAINTUMOR_DATA) --output $(BRAINTUMOR_OUTPUT)

RUNS := $(BRAINTUMOR_OUTPUT)/runs

# Each model: train, choose its decision settings on the validation patients, then evaluate on the test patients.
train: preprocess
	$(BIN)/python jobs/explore.py --data $(BRAINTUMOR_DATA) --output $(BRAINTUMOR_OUTPUT)/overview
	$(BIN)/python jobs/train.py --task segment --architecture $(SEGMENTER) --data $(BRAINTUMOR_OUTPUT) --no-evaluate
	$(BIN)/python jobs/tune.py --model $(RUNS)/segment-$(SEGMENTER)/model --data $(BRAINTUMOR_OUTPUT)
	$(BIN)/python jobs/evaluate.py --model $(RUNS)/segment-$(SEGMENTER)/model --data $(BRAINTUMOR_OUTPUT) --output $(RUNS)/segment-$(SEGMENTER)/evaluation
	$(BIN)/python jobs/train.py --task classify --data $(BRAINTUMOR_OUTPUT) --no-evaluate
	$(BIN)/python jobs/tune.py --model $(RUNS)/classify-smallcnn/model --data $(BRAINTUMOR_OUTPUT)
	$(BIN)/python jobs/evaluate.py --model $(RUNS)/classify-smallcnn/model --data $(BRAINTUMOR_OUTPUT) --output $(RUNS)/classify-smallcnn/evaluation

explore: install
	$(BIN)/python jobs/explore.py --data $(BRAINTUMOR_DATA) --output $(BRAINTUMOR_OUTPUT)/overview

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(BRAINTUMOR_OUTPUT) .pytest_cache
