# The README's commands.  Each target installs the Debian packages it needs
# (as root; otherwise it names them) and builds in its own directory.
#   make demo      build and run examples/demo.c
#   make check     format and layering lint, then a Debug build with
#                  ASan/UBSan/LSan and -Werror, the whole suite via CTest
#   make bench     Release build, run every program in bench/
#   make valgrind  the suite under Valgrind memcheck (no sanitizers)
#   make check-clang  the check build with clang
#   make format    clang-format every C file in place

JOBS ?= $(shell nproc 2>/dev/null || echo 2)
CMAKE ?= cmake
CTEST ?= ctest

.PHONY: demo check check-clang bench valgrind format clean

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

demo:
	@scripts/deps.sh demo
	@$(CMAKE) -S . -B build/release -DCMAKE_BUILD_TYPE=Release \
	  -DWARDEN_TESTS=OFF -DWARDEN_BENCH=OFF >/dev/null
	@$(CMAKE) --build build/release -j$(JOBS) --target example-demo
	./build/release/examples/demo

check:
	@scripts/deps.sh check
	@scripts/lint.sh
	@$(CMAKE) -S . -B build/check -DCMAKE_BUILD_TYPE=Debug \
	  -DWARDEN_SANITIZE=ON -DWARDEN_WERROR=ON -DWARDEN_BENCH=OFF >/dev/null
	@$(CMAKE) --build build/check -j$(JOBS)
	cd build/check && $(CTEST) --output-on-failure -j$(JOBS)

check-clang:
	@scripts/deps.sh check
	@dpkg-query -W clang >/dev/null 2>&1 || { echo "needs clang" >&2; exit 1; }
	@CC=clang $(CMAKE) -S . -B build/clang -DCMAKE_BUILD_TYPE=Debug \
	  -DWARDEN_SANITIZE=ON -DWARDEN_WERROR=ON -DWARDEN_BENCH=OFF >/dev/null
	@$(CMAKE) --build build/clang -j$(JOBS)
	cd build/clang && $(CTEST) --output-on-failure -j$(JOBS)

bench:
	@scripts/deps.sh bench
	@$(CMAKE) -S . -B build/bench -DCMAKE_BUILD_TYPE=Release \
	  -DWARDEN_TESTS=OFF >/dev/null
	@$(CMAKE) --build build/bench -j$(JOBS)
	@for b in build/bench/bench/*; do echo "== $$b"; $$b || exit 1; done

valgrind:
	@scripts/deps.sh valgrind
	@$(CMAKE) -S . -B build/valgrind -DCMAKE_BUILD_TYPE=Debug \
	  -DWARDEN_WERROR=ON -DWARDEN_BENCH=OFF >/dev/null
	@$(CMAKE) --build build/valgrind -j$(JOBS)
	@# test-overflow is left out: its children die on purpose mid-stack.
	@for t in build/valgrind/tests/test-*; do \
	  case $$t in *test-overflow) continue;; esac; \
	  echo "== valgrind $$t"; \
	  valgrind -q --error-exitcode=99 --leak-check=full \
	    --errors-for-leak-kinds=definite,indirect --trace-children=yes \
	    $$t --jobs=1 || exit 1; done

clean:
	rm -rf build
