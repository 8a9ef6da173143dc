# decache — build, fetch models, run, test, bench.
#   make run    set everything up on a fresh Debian machine and answer a prompt
#   make test   the test suite (the README's test command; .ci/run calls it)
SHELL := /bin/bash
CARGO ?= cargo
BIN := target/release/decache
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PROMPT ?= Explain in two sentences why the sky is blue.

.PHONY: all deps build models pyenv clients clients-smollm2 llama-src llama-tools llama-bench-same run test test-fast test-models lint bench bench-llama bench-moe bench-qwen35 bench-hybrid-replay bench-spec bench-concurrency replay bench-clients load crash-soak soak fuzz fuzz-seeds perplexity endurance long-session eval-report eval-report-gemma3 calibrate check-vulkan clean

all: build

# Build dependencies of ggml (compiled from source by llama-cpp-sys-2) and of
# bindgen: cmake, a C/C++ compiler and libclang. Installed only when missing.
deps:
	@missing=""; \
	command -v cmake >/dev/null 2>&1 || missing="$$missing cmake"; \
	command -v g++ >/dev/null 2>&1 || missing="$$missing g++"; \
	dpkg -s libclang-dev >/dev/null 2>&1 || missing="$$missing libclang-dev"; \
	command -v tmux >/dev/null 2>&1 || missing="$$missing tmux"; \
	python3 -c 'import ensurepip, venv' >/dev/null 2>&1 || missing="$$missing python3-venv"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

build: deps
	$(CARGO) build --release

# Both real models (SmolLM2-135M-Instruct, gemma-3-270m) into the cache dir.
models: build
	DECACHE_BIN=$(BIN) bash scripts/fetch-models.sh

# The official Python clients the server tests drive (openai, anthropic).
PYENV := target/pyenv
pyenv: $(PYENV)/.ready
$(PYENV)/.ready: scripts/client-requirements.txt
	python3 -m venv $(PYENV)
	$(PYENV)/bin/pip install -q --disable-pip-version-check -r scripts/client-requirements.txt
	touch $@

# The agent harnesses the client tests drive (tests/harness_clients.rs), each
# at a pinned version, from npm and PyPI: Claude Code, Codex, opencode, Qwen
# Code (which needs Node.js 22: installed from npm beside it) and aider.
CLIENTS := target/clients
CLAUDE_CODE_VERSION := 2.1.332
CODEX_VERSION := 0.171.0
OPENCODE_VERSION := 1.18.33
QWEN_CODE_VERSION := 0.24.4
NODE22_VERSION := 22.23.3
AIDER_VERSION := 0.86.2
NPM_INSTALL := npm install --no-audit --no-fund --loglevel=error --prefix
CLIENTS_STAMP := $(CLIENTS)/.ready-$(CLAUDE_CODE_VERSION)-$(CODEX_VERSION)-$(OPENCODE_VERSION)-$(QWEN_CODE_VERSION)-$(NODE22_VERSION)-$(AIDER_VERSION)
clients: $(CLIENTS_STAMP)
$(CLIENTS_STAMP):
	$(NPM_INSTALL) $(CLIENTS)/claude-code @anthropic-ai/claude-code@$(CLAUDE_CODE_VERSION)
	$(NPM_INSTALL) $(CLIENTS)/codex @openai/codex@$(CODEX_VERSION)
	$(NPM_INSTALL) $(CLIENTS)/opencode opencode-ai@$(OPENCODE_VERSION)
	$(NPM_INSTALL) $(CLIENTS)/node22 node@$(NODE22_VERSION)
	$(NPM_INSTALL) $(CLIENTS)/qwen-code @qwen-code/qwen-code@$(QWEN_CODE_VERSION)
	chmod +x $(CLIENTS)/qwen-code/node_modules/@qwen-code/qwen-code/vendor/ripgrep/*/rg 2>/dev/null || true
	python3 -m venv $(CLIENTS)/aider
	$(CLIENTS)/aider/bin/pip install -q --disable-pip-version-check aider-chat==$(AIDER_VERSION)
	rm -f $(CLIENTS)/.ready*
	touch $@

# Each harness's first request on the real SmolLM2 model, unscripted:
# accepted and answered (the run stops there; a 135M model does not finish
# the task). Long: a 6k-18k-token prefill per client.
clients-smollm2: models clients
	DECACHE_CLIENTS_MODEL=smollm2 $(CARGO) test --release --test harness_clients -- --test-threads 1 --nocapture

# llama.cpp's own binaries (llama-server, llama-bench, llama-completion) for
# speed comparisons, built with cmake from the llama.cpp that the
# llama-cpp-python sdist on PyPI vendors (the crate's vendored copy has no tools).
LLAMA_CPP_PYTHON ?= 0.3.36
LLAMA_DIR := target/llama.cpp-$(LLAMA_CPP_PYTHON)
LLAMA_BIN := $(LLAMA_DIR)/build/bin
# The sources alone (no build) also give the tests the chat templates of the
# model families llama.cpp tests with (models/templates/*.jinja).
LLAMA_SRC := $(LLAMA_DIR)/llama_cpp_python-$(LLAMA_CPP_PYTHON)/vendor/llama.cpp
llama-src: $(LLAMA_SRC)/.ready
$(LLAMA_SRC)/.ready: | pyenv
	mkdir -p $(LLAMA_DIR)
	cd $(LLAMA_DIR) && ../../$(PYENV)/bin/pip download -q --disable-pip-version-check --no-binary :all: --no-deps \
		llama-cpp-python==$(LLAMA_CPP_PYTHON) -d sdist && tar xzf sdist/llama_cpp_python-$(LLAMA_CPP_PYTHON).tar.gz
	touch $@
llama-tools: $(LLAMA_BIN)/.ready
$(LLAMA_BIN)/.ready: | $(LLAMA_SRC)/.ready
	cmake -S $(LLAMA_DIR)/llama_cpp_python-$(LLAMA_CPP_PYTHON)/vendor/llama.cpp -B $(LLAMA_DIR)/build \
		-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
		-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DCMAKE_RUNTIME_OUTPUT_DIRECTORY=$(CURDIR)/$(LLAMA_BIN)
	cmake --build $(LLAMA_DIR)/build -j$$(nproc) --target llama-server llama-bench llama-completion
	touch $@

# llama-bench at decache's own llama.cpp revision: llama-cpp-sys-2 vendors
# llama.cpp without its tools, so the crate's copy gets the sdist's llama-bench
# sources and the same cmake flags as llama-tools. Then both programs run the
# same ggml and llama.cpp source, and a difference is the engine's alone.
LLAMA_SAME := target/llama.cpp-crate
LLAMA_SAME_BIN := $(LLAMA_SAME)/build/bin
llama-bench-same: $(LLAMA_SAME_BIN)/.ready
# (Its build info must not take decache's own commit from the enclosing repository.)
$(LLAMA_SAME_BIN)/.ready: export GIT_CEILING_DIRECTORIES := $(CURDIR)/$(LLAMA_SAME)
$(LLAMA_SAME_BIN)/.ready: | $(LLAMA_SRC)/.ready
	crate=$$($(CARGO) metadata --format-version 1 | python3 -c 'import json, sys; \
		print([p["manifest_path"] for p in json.load(sys.stdin)["packages"] if p["name"] == "llama-cpp-sys-2"][0])'); \
	rm -rf $(LLAMA_SAME)/src && mkdir -p $(LLAMA_SAME) && cp -r "$$(dirname $$crate)/llama.cpp" $(LLAMA_SAME)/src
	chmod -R u+w $(LLAMA_SAME)/src && rm -rf $(LLAMA_SAME)/src/tools && mkdir -p $(LLAMA_SAME)/src/tools
	cp -r $(LLAMA_SRC)/tools/llama-bench $(LLAMA_SAME)/src/tools/
	printf 'llama_add_compile_flags()\nadd_subdirectory(llama-bench)\n' > $(LLAMA_SAME)/src/tools/CMakeLists.txt
	cmake -S $(LLAMA_SAME)/src -B $(LLAMA_SAME)/build \
		-DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF \
		-DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF -DCMAKE_RUNTIME_OUTPUT_DIRECTORY=$(CURDIR)/$(LLAMA_SAME_BIN)
	cmake --build $(LLAMA_SAME)/build -j$$(nproc) --target llama-bench
	touch $@

run: build
	$(BIN) run -p "$(PROMPT)" -n 128

# The test suite in two tiers, one after the other (about 13 minutes here; side by
# side their ggml thread pools spin against each other on 2 cores: 25 minutes):
#   test-fast    unit tests, doc tests, generated models, protocol and CLI tests,
#                terminal sessions (a few minutes, mostly waiting on processes);
#   test-models  the real models against llama.cpp, the server, the long
#                sessions, crash safety (CPU-bound: one test at a time).
# Every file in tests/ belongs to exactly one tier (checked below).
FAST_TESTS := arch_oracle packed_matmul quant_types fuzz_corpus tokenizer_spec gguf_bad pull_local chat_template \
	agent_cli agent_sandbox conversation_parts cli chat_tty agent_tty server_script harness_clients harmony_format \
	hybrid_oracle hybrid_state gemma4_oracle decode_attention
MODEL_TESTS := agent_session crash_safety conversation server_http server_responses server_clients eval transcript swa_pool \
	tokenizer_oracle perplexity oracle_logits decache_oracle flash_attn reuse_oracle session_file speculation sequences_oracle \
	rpc_loopback gpu_offload packed_logits
# The tests run without the user's calibrations (--positions auto then keeps
# its built-in meaning on every machine; tests/eval.rs sets its own).
test test-fast test-models: export DECACHE_CALIBRATION_DIR := $(CURDIR)/target/test-calibration
test: models pyenv clients llama-src
	@all=$$(ls tests/*.rs | xargs -n1 basename | sed 's/\.rs$$//' | sort); \
	tiers=$$(echo $(FAST_TESTS) $(MODEL_TESTS) | tr ' ' '\n' | sort); \
	if [ "$$all" != "$$tiers" ]; then echo "tests/ and the tiers differ:"; diff <(echo "$$all") <(echo "$$tiers"); exit 1; fi
	$(CARGO) test --release --no-run
	$(MAKE) --no-print-directory test-fast
	$(MAKE) --no-print-directory test-models

test-fast: models pyenv clients llama-src
	$(CARGO) test --release --doc
	$(CARGO) test --release --lib $(addprefix --test ,$(FAST_TESTS)) -- --test-threads=1

test-models: models pyenv
	$(CARGO) test --release $(addprefix --test ,$(MODEL_TESTS)) -- --test-threads=1

# Style and lints (run by .ci/run before the tests): rustfmt, clippy with
# warnings as errors on every target, and the engine alone (no default
# features) still builds.
lint: deps
	@$(CARGO) fmt --version >/dev/null 2>&1 && $(CARGO) clippy --version >/dev/null 2>&1 || rustup component add rustfmt clippy
	$(CARGO) fmt --all --check
	$(CARGO) clippy --release --all-targets -- -D warnings
	$(CARGO) clippy --release --lib --no-default-features -- -D warnings

bench: build
	$(BIN) bench --llama -t 2 -r 5

# Build with ggml's Vulkan backend (issue 8), in its own target directory,
# and run tests/gpu_offload.rs (against llama.cpp on the same device). No GPU
# is needed: without one, GGML_VK_VISIBLE_DEVICES=0 is Mesa's lavapipe, a
# Vulkan device emulated on the CPU (slow, but ggml-vulkan's real code).
# This ggml uses VK_EXT_layer_settings, newer than Debian bookworm's Vulkan
# headers (1.3.239): trixie's libvulkan-dev is downloaded
# (not installed) and its headers put on the include path, ahead of the
# system's (llama-cpp-sys-2 forwards CMAKE_* variables to CMake).
VULKAN_HEADERS := target/vulkan-headers
check-vulkan: deps
	@missing=""; \
	dpkg -s libvulkan-dev >/dev/null 2>&1 || missing="$$missing libvulkan-dev"; \
	command -v glslc >/dev/null 2>&1 || missing="$$missing glslc"; \
	dpkg -s spirv-headers >/dev/null 2>&1 || missing="$$missing spirv-headers"; \
	dpkg -s mesa-vulkan-drivers >/dev/null 2>&1 || missing="$$missing mesa-vulkan-drivers"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi
	@if [ ! -f $(VULKAN_HEADERS)/usr/include/vulkan/vulkan.hpp ]; then \
		d=$$(mktemp -d); mkdir -p $$d/lists/partial; \
		echo "deb http://deb.debian.org/debian trixie main" > $$d/sources.list; \
		o="-o Dir::Etc::sourcelist=$$d/sources.list -o Dir::Etc::sourceparts=- -o Dir::State::Lists=$$d/lists"; \
		apt-get $$o update -qq && (cd $$d && apt-get $$o download libvulkan-dev) && \
		dpkg -x $$d/libvulkan-dev_*.deb $(VULKAN_HEADERS) && rm -rf $$d; \
	fi
	CMAKE_CXX_STANDARD_INCLUDE_DIRECTORIES="$(CURDIR)/$(VULKAN_HEADERS)/usr/include" CARGO_TARGET_DIR=target/vulkan \
		$(CARGO) build --release --features vulkan --bin decache
	GGML_VK_VISIBLE_DEVICES=$${GGML_VK_VISIBLE_DEVICES:-0} CARGO_TARGET_DIR=target/vulkan \
		CMAKE_CXX_STANDARD_INCLUDE_DIRECTORIES="$(CURDIR)/$(VULKAN_HEADERS)/usr/include" \
		$(CARGO) test --release --features vulkan --test gpu_offload -- --nocapture

# The server's caches on a pruned agent history: subconscious vs prefix-only
# vs llama.cpp's prefix + --cache-reuse (a few minutes).
replay: build
	$(BIN) bench --replay --llama -t 2 --turns 24 --window 10

# Agent harness requests against decache serve and llama-server on the same
# model, -c 32768 -t 2, one after the other: each client's recorded first
# request and a later turn (CAPTURES/<client>-first.json, -later.json), with
# prompt tokens, prefill time, TTFT and the later turn's reuse
# (docs/BENCHMARKS.md; CPU-bound, a few hours on 2 cores).
CAPTURES ?= tests/clients/captures
bench-clients: models llama-tools
	python3 scripts/bench-clients.py --decache $(BIN) --llama-server $(LLAMA_BIN)/llama-server \
		--model "$$($(BIN) pull smollm2)" --captures $(CAPTURES) \
		--out target/bench-clients.md --json target/bench-clients.json

# decache's defaults beside llama.cpp's own llama-bench (issue 21): pp512 and
# tg128 at depths 0 and 4096 on SmolLM2 and depth 0 on gemma-3, defaults
# against defaults (flash attention on for both) and -fa off for both, four
# rounds in alternating order (a run's speed drifts by up to 10% here between
# minutes, so the table gives each round's own ratio too); then depth 16384,
# defaults, two rounds (its prefill alone takes two to four minutes per program).
# About 30 minutes here (14 for the first part, 15 for depth 16384).
bench-llama: models llama-tools
	python3 scripts/bench-llama.py --decache $(BIN) --llama-bench $(LLAMA_BIN)/llama-bench -t 2 \
		--model "$$($(BIN) pull smollm2):0,4096" --model "$$($(BIN) pull gemma3-270m):0" --fa default,0 --rounds 4 \
		--md target/bench-llama.md --json target/bench-llama.json
	python3 scripts/bench-llama.py --decache $(BIN) --llama-bench $(LLAMA_BIN)/llama-bench -t 2 \
		--model "$$($(BIN) pull smollm2):16384" --fa default --rounds 2 \
		--md target/bench-llama-16k.md --json target/bench-llama-16k.json

# A mixture of experts at real layer shapes (issue 20): a random-weight
# qwen3moe file with 4 layers of Qwen3-30B-A3B (examples/gen_moe.rs, Q4_K),
# decache bench beside llama-bench, defaults and -fa off (about 3 minutes).
MOE_FILE := target/qwen3moe-a3b-4l.gguf
$(MOE_FILE): examples/gen_moe.rs tests/common/gguf_writer.rs
	$(CARGO) run --release --example gen_moe -- $@ 4
bench-moe: build llama-tools $(MOE_FILE)
	python3 scripts/bench-llama.py --decache $(BIN) --llama-bench $(LLAMA_BIN)/llama-bench -t 2 \
		--model $(MOE_FILE):0 --fa default,0 --rounds 3 --md target/bench-moe.md --json target/bench-moe.json

# Hybrid recurrent layers (issue 20): a random-weight qwen35 file with 8 layers
# of Qwen3.5-2B's shapes (examples/gen_qwen35.rs, Q4_K: 6 gated-delta-net
# layers, 2 attention), decache bench beside llama-bench, defaults and -fa off.
QWEN35_FILE := target/qwen35-2b-8l.gguf
$(QWEN35_FILE): examples/gen_qwen35.rs tests/common/qwen35_file.rs tests/common/gguf_writer.rs
	$(CARGO) run --release --example gen_qwen35 -- $@ 8
bench-qwen35: build llama-tools $(QWEN35_FILE)
	python3 scripts/bench-llama.py --decache $(BIN) --llama-bench $(LLAMA_BIN)/llama-bench -t 2 \
		--model $(QWEN35_FILE):0 --fa default,0 --rounds 3 --md target/bench-qwen35.md --json target/bench-qwen35.json

# A pruned agent history on the same qwen35 file through decache serve and
# llama-server: prompt tokens each evaluated per turn (about 10 minutes).
bench-hybrid-replay: build llama-tools $(QWEN35_FILE)
	python3 scripts/bench-hybrid-replay.py --decache $(BIN) --llama-server $(LLAMA_BIN)/llama-server -t 2 \
		--model $(QWEN35_FILE) --md target/bench-hybrid-replay.md --json target/bench-hybrid-replay.json

# Draft-free speculative decoding (issue 21): an edit, a quote and free prose,
# greedy, decache serve --spec off/auto against llama-server plain and with
# each of its n-gram speculation types (about 12 minutes).
bench-spec: models llama-tools
	python3 scripts/bench-spec.py --decache $(BIN) --llama-server $(LLAMA_BIN)/llama-server \
		--model "$$($(BIN) pull smollm2)" --md target/bench-spec.md --json target/bench-spec.json

# Concurrent multi-turn clients sharing a system prompt (issue 21): 4 and 8
# against decache serve -np N and llama-server -np N, then a 16k-token prefill
# beside a streaming answer (about 20 minutes).
bench-concurrency: models llama-tools
	python3 scripts/bench-concurrency.py --decache $(BIN) --llama-server $(LLAMA_BIN)/llama-server \
		--model "$$($(BIN) pull smollm2)" --clients 4,8 --long-prefill 16384 \
		--md target/bench-concurrency.md --json target/bench-concurrency.json

# 8 concurrent streaming clients for 60 s against `decache serve` (-np 2 -t 1).
load: build
	$(CARGO) run --release --example load -- --clients 8 --seconds 60 --parallel 2 -t 1

# The same load for 10 minutes: the server's memory is sampled 20 times and
# must stay flat (docs/RELIABILITY.md).
# Crash safety with 100 SIGKILLs per test instead of the test command's 20
# (about 10 minutes).
crash-soak: build models
	DECACHE_CRASH_KILLS=100 $(CARGO) test --release --test crash_safety -- --test-threads=1 --nocapture

soak: build
	$(CARGO) run --release --example load -- --clients 8 --seconds 600 --parallel 2 -t 1

# Fuzzing (docs/RELIABILITY.md): each target under libFuzzer for FUZZ_RUNS
# executions (1M) or FUZZ_SECONDS (600), whichever comes first, starting
# from the committed seeds; crashes are
# written to fuzz/regressions/<target>/, which tests/fuzz_corpus.rs replays.
# Needs the nightly toolchain; installs cargo-fuzz when missing.
FUZZ_SECONDS ?= 600
FUZZ_RUNS ?= 1000000
FUZZ_TARGETS ?= gguf tokenizer template transcript toolcall http_body
fuzz-seeds:
	$(CARGO) run --release --example fuzz_seeds

fuzz: deps
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	for t in $(FUZZ_TARGETS); do \
	  mkdir -p target/fuzz-corpus/$$t fuzz/regressions/$$t && \
	  cargo +nightly fuzz run -O $$t target/fuzz-corpus/$$t fuzz/seeds/$$t -- \
	    -runs=$(FUZZ_RUNS) -max_total_time=$(FUZZ_SECONDS) -timeout=20 -rss_limit_mb=4096 \
	    -artifact_prefix=fuzz/regressions/$$t/ 2>&1 | tee target/fuzz-$$t.log | grep -E '^#[0-9]+ *(DONE|pulse)|ERROR|SUMMARY' ; \
	  test $${PIPESTATUS[0]} -eq 0 || exit 1; \
	done

# A scripted agent-like chat of 100k+ tokens through 4096 cells (about 35
# minutes here): forgotten tokens by reason, time spent forgetting, and the
# measured cost of re-prefilling the kept text after every decache round.
endurance: models
	$(CARGO) run --release --example endurance -- -c 4096 --tokens 100000 --json target/endurance.json

# An endless session (issue 8): the same script, 250k tokens through 8192
# cells with no re-prefill measurements; throughput (wall and per CPU second)
# and resident/peak memory every 25k tokens, which must stay flat.
long-session: models
	$(CARGO) run --release --example endurance -- -c 8192 --tokens 250000 --warm-up --measure-every 0 --window 25000 --json target/long-session.json

# The eval report (docs/eval/) and SmolLM2's calibration (calibration/ and
# the user's calibration directory, where --positions auto finds it): the
# eleven shipped annotated sets under every strategy, the refreshes at 64 and
# 128 tokens per gap and the automatic one, and the model's own forgetting
# with the calibration's refresh (about 40 minutes here).
EVAL_STRATEGIES := full,recompute,keep,shift,keep+refresh:64,shift+refresh:64,keep+refresh:128,shift+refresh:128
eval-report: build models
	$(BIN) eval -t 2 --calibrate --calibration-file calibration/SmolLM2-135M-Instruct.Q4_1.json \
		--strategies $(EVAL_STRATEGIES),shift+refresh:auto,forget-tool,compaction,window --refresh 128 \
		--report docs/eval --json docs/eval/results.json

# The same on gemma-3-270m with the calibration's candidates only (docs/eval-gemma3/,
# about 17 minutes here; with $(EVAL_STRATEGIES), over an hour).
eval-report-gemma3: build models
	$(BIN) eval -m "$$($(BIN) pull gemma3-270m)" -t 2 --calibrate \
		--calibration-file calibration/gemma-3-270m-Q4_K_M.json --strategies recompute,keep,shift,shift+refresh:64 \
		--report docs/eval-gemma3 --json docs/eval-gemma3/results.json

# Both calibrations, with their reports.
calibrate: eval-report eval-report-gemma3

perplexity: models
	$(BIN) perplexity -f prompts/perplexity.txt -c 512 -t 2

clean:
	$(CARGO) clean
