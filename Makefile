# camelid — top-level entry points. `make demo` and `make test` work on a fresh Debian machine: they install
# what is missing (scripts/deps.sh), build with CMake, then run.
BUILD      ?= build
ASAN_BUILD ?= build-asan
FUZZ_BUILD ?= build-fuzz
FUZZ_SECONDS ?= 20
JOBS ?= $(shell nproc)

.PHONY: all build deps deps-test demo test test-release test-asan fuzz clean format

all: build

deps:
	@scripts/deps.sh build

deps-test:
	@scripts/deps.sh test
	@[ -f tests/serve/node_modules/openai/package.json ] && [ -f tests/serve/node_modules/playwright-core/package.json ] || \
		(cd tests/serve && npm ci --no-audit --no-fund --loglevel=error)

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

demo: build
	@scripts/deps.sh demo
	@scripts/demo.sh $(BUILD)/bin/camelid

# The whole suite: release build + ctest, the same tests under ASan/UBSan, then every fuzz target for a
# bounded time.
test: deps-test test-release test-asan fuzz

test-release: deps-test
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-asan: deps-test
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCAMELID_SANITIZE=ON >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)
	@cd $(ASAN_BUILD) && ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
		ctest --output-on-failure -j $(JOBS) -LE slow

fuzz: deps-test
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Debug -DCAMELID_FUZZ=ON -DCAMELID_WERROR=OFF >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS)
	@scripts/fuzz.sh $(FUZZ_BUILD) $(FUZZ_SECONDS)

format:
	@clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(FUZZ_BUILD)
