# The front door: every target is one line of `python -m ...`.
PY      ?= .venv/bin/python
MODEL   ?= models/default
DUMP    ?=
BASE_MODEL ?=
OUT     ?= models/reranker
ARGS    ?=
# The model dir's editor: editor/, or reranker/ in a dir made before the rename (corpus/modeldir.py).
EDITOR  ?= $(if $(wildcard $(MODEL)/editor/config.json),$(MODEL)/editor,$(if $(wildcard $(MODEL)/reranker/config.json),$(MODEL)/reranker,$(MODEL)/editor))

.PHONY: install test lint bench chat serve train-markov train-reranker train-default prepare eval clean

# torch==2.13.0 first: it resolves to the CPU wheel on disk, so nothing later pulls a CUDA build.
install:
	python3.11 -m venv .venv && $(PY) -m pip install -q --upgrade pip && $(PY) -m pip install -q torch==2.13.0 && $(PY) -m pip install -q -e '.[dev]'

test:
	$(PY) -m pytest -q

lint:
	$(PY) -m ruff check corpus markov reranker server benchmarks tests

bench:
	$(PY) benchmarks/bench_markov.py && $(PY) benchmarks/bench_rerank.py && $(PY) benchmarks/bench_corpus.py && $(PY) benchmarks/bench_server.py --model $(MODEL)

chat:
	$(PY) -m server chat --model $(MODEL)

serve:
	$(PY) -m server serve --model $(MODEL)

train-markov:
	$(PY) -m markov build --input chitchat --out $(MODEL)/markov

train-reranker:
	$(PY) -m reranker train --dump $(DUMP) $(if $(BASE_MODEL),--base-model $(BASE_MODEL)) --out $(OUT) $(ARGS)

train-default:
	$(PY) -m markov build --input chitchat --out $(MODEL)/markov && $(PY) -m reranker train --default --out $(EDITOR)

prepare:
	$(PY) -m reranker prepare $(DUMP) --out data/prepared $(ARGS)

eval:
	$(PY) -m reranker eval $(EDITOR) $(or $(DUMP),chitchat) --baseline $(ARGS)

clean:
	rm -rf .venv .pytest_cache .ruff_cache
