# netc — build, test, demo.  `make test` on a fresh machine installs what it
# needs (scripts/setup.sh) and runs every test.

CC      ?= cc
CSTD    := -std=c11
WARN    := -Wall -Wextra -Werror
OPT     ?= -O2 -g
BUILD   ?= build
SAN     :=
CFLAGS_ALL = $(CSTD) $(WARN) $(OPT) $(SAN) -Icompiler -Iruntime -Igrammar -I$(BUILD)/gen -I/usr/include/cjson -I/usr/include/nifti $(CFLAGS)
LIBS       = -lcjson -lniftiio -lznz -lz -lm $(LLVM_LIBS)
# LLVM 16 for the LLVM backend (compiler/l3_llvm*.c, the only files that include
# its headers); -rdynamic lets the JIT resolve symbols of the executable.
LLVM_CONFIG ?= llvm-config-16
LLVM_LIBS    = $(shell $(LLVM_CONFIG) --ldflags --libs core orcjit native passes) -rdynamic

CHECK_CFLAGS = $(shell pkg-config --cflags check)
CHECK_LIBS   = $(shell pkg-config --libs check)

COMPILER_SRC := $(filter-out compiler/main.c,$(wildcard compiler/*.c))
RUNTIME_SRC  := $(wildcard runtime/*.c)
GEN_SRC      := $(BUILD)/gen/parser.c $(BUILD)/gen/lexer.c
LIB_OBJ      := $(patsubst compiler/%.c,$(BUILD)/obj/%.o,$(COMPILER_SRC)) \
                $(patsubst runtime/%.c,$(BUILD)/obj/runtime/%.o,$(RUNTIME_SRC)) \
                $(BUILD)/obj/parser.o $(BUILD)/obj/lexer.o
TEST_SRC     := $(wildcard tests/*.c)
TEST_OBJ     := $(patsubst tests/%.c,$(BUILD)/obj/tests/%.o,$(TEST_SRC))
DEPSTAMP     := $(BUILD)/.setup-ok

.PHONY: gpu-check all test test-unit test-asan test-valgrind demo deploy-demo bench fuzz clean setup help generated
all: $(BUILD)/netc

help:
	@echo "make            build build/netc"
	@echo "make demo       train the shipped 2D U-Net on Colin27 (brain extraction) and print the held-out Dice"
	@echo "make deploy-demo  the demo model as a standalone binary on the whole Colin27 head: Dice, HD95, time"
	@echo "make test       run every test (installs dependencies first if missing)"
	@echo "make test-asan  unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
	@echo "make test-valgrind  unit tests and CLI main paths under valgrind (leaks, memory errors)"
	@echo "make fuzz       run the front-end fuzzer (FUZZ_SECONDS=600)"
	@echo "make bench      time the generated code against PyTorch (minutes; not part of make test)"

setup $(DEPSTAMP): scripts/setup.sh
	@scripts/setup.sh
	@mkdir -p $(BUILD) && touch $(DEPSTAMP)

$(BUILD)/gen/parser.c $(BUILD)/gen/parser.h &: grammar/parser.y | $(DEPSTAMP)
	@mkdir -p $(BUILD)/gen
	bison -Wall -Werror -d -o $(BUILD)/gen/parser.c $<

$(BUILD)/gen/lexer.c: grammar/lexer.l $(BUILD)/gen/parser.h | $(DEPSTAMP)
	@mkdir -p $(BUILD)/gen
	flex -o $@ $<

# Generated scanners trip a few warnings we cannot fix at the source.
$(BUILD)/obj/lexer.o: $(BUILD)/gen/lexer.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Wno-sign-compare -Wno-unused-function -MMD -c -o $@ $<

$(BUILD)/obj/parser.o: $(BUILD)/gen/parser.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -c -o $@ $<

$(BUILD)/obj/l3_llvm.o: CFLAGS_ALL += -isystem $(shell $(LLVM_CONFIG) --includedir)
$(BUILD)/obj/l3_llvm_jit.o: CFLAGS_ALL += -isystem $(shell $(LLVM_CONFIG) --includedir)
$(BUILD)/obj/l3_llvm_expr.o: CFLAGS_ALL += -isystem $(shell $(LLVM_CONFIG) --includedir)

$(BUILD)/obj/%.o: compiler/%.c $(BUILD)/gen/parser.h | $(DEPSTAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -c -o $@ $<

$(BUILD)/obj/runtime/%.o: runtime/%.c $(BUILD)/gen/parser.h | $(DEPSTAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -MMD -c -o $@ $<

$(BUILD)/obj/tests/%.o: tests/%.c $(BUILD)/gen/parser.h | $(DEPSTAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) $(CHECK_CFLAGS) -DNETC_SOURCE_DIR='"$(CURDIR)"' \
	    -DNETC_CUDA_EMU='"$(abspath $(BUILD))/libnetc_cuda_emu.so"' -MMD -c -o $@ $<

$(BUILD)/libnetc.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(BUILD)/netc: $(BUILD)/obj/main.o $(BUILD)/libnetc.a | $(BUILD)/libnetcrt.a $(BUILD)/include/netc_standalone.h
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(LIBS)

# The LLVM-free runtime that `netc build` links its standalone executables
# with (found next to the netc executable): NIfTI I/O, preprocessing, the
# inference engine, post-processing, PNG overlays, safetensors, the thread
# pool and the standalone main() (runtime/standalone/).  Built without SAN.
RT_NAMES := nifti_io atomic_file dataset ds_geometry ds_cache safetensors pool infer postproc overlay png
RT_SRC   := $(patsubst %,runtime/%.c,$(RT_NAMES)) runtime/standalone/main.c
RT_OBJ   := $(patsubst runtime/%.c,$(BUILD)/obj/rt/%.o,$(RT_SRC))
RT_CFLAGS = $(CSTD) $(WARN) $(OPT) -Iruntime -Icompiler -I/usr/include/cjson -I/usr/include/nifti $(CFLAGS)

$(BUILD)/obj/rt/%.o: runtime/%.c | $(DEPSTAMP)
	@mkdir -p $(dir $@)
	$(CC) $(RT_CFLAGS) -MMD -c -o $@ $<

$(BUILD)/libnetcrt.a: $(RT_OBJ)
	@rm -f $@
	ar rcs $@ $^
	@if nm -u $@ | grep -qi llvm; then echo "$@ references LLVM" >&2; rm -f $@; exit 1; fi

$(BUILD)/include/netc_standalone.h: runtime/standalone/standalone.h
	@mkdir -p $(dir $@)
	cp $< $@

$(BUILD)/test_netc: $(TEST_OBJ) $(BUILD)/libnetc.a | $(BUILD)/libnetc_cuda_emu.so
	$(CC) $(CFLAGS_ALL) -o $@ $^ $(CHECK_LIBS) $(LIBS)

# A stand-in CUDA driver that runs the printed CUDA C on the CPU, so make test
# checks the GPU backend without a GPU (tests/cuda_emu/emu.c, runtime/cuda.h).
# Built without sanitizers: it is dlopen'ed.
$(BUILD)/libnetc_cuda_emu.so: tests/cuda_emu/emu.c | $(DEPSTAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CSTD) $(WARN) -O2 -g -fPIC -shared -o $@ $< -ldl

# The GPU check (tools/gpu_check.c, scripts/gpu_check.sh): no LLVM, no Check,
# so it runs on a GPU machine that has neither.  Needs only the NVIDIA driver
# and NVRTC at run time (dlopen'ed), and cc for the CPU comparison.
GPU_CHECK_OBJ := $(BUILD)/obj/tools/gpu_check.o $(BUILD)/obj/tools/no_llvm.o $(BUILD)/obj/tests/codegen_compare.o

$(BUILD)/obj/tools/%.o: tools/%.c $(BUILD)/gen/parser.h | $(DEPSTAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -Itests -MMD -c -o $@ $<

$(BUILD)/gpu_check: $(GPU_CHECK_OBJ) $(BUILD)/libnetc.a
	$(CC) $(CFLAGS_ALL) -o $@ $^ -Wl,--as-needed -lcjson -lniftiio -lznz -lz -lm -ldl -lpthread -rdynamic

gpu-check: $(BUILD)/gpu_check

# ---- tests -------------------------------------------------------------
# tests/cli_test.sh first, then every other tests/cli_*.sh (each sources tests/cli_lib.sh)
CLI_TESTS := tests/cli_test.sh $(sort $(filter-out tests/cli_lib.sh tests/cli_test.sh,$(wildcard tests/cli_*.sh)))

test: $(BUILD)/netc $(BUILD)/test_netc
	$(BUILD)/test_netc
	for f in $(CLI_TESTS); do NETC=$(BUILD)/netc bash $$f || exit 1; done
	/usr/bin/python3 tools/compare_with_torch.py --netc $(BUILD)/netc
	@rm -rf $(BUILD)/refdump
	NETC_REF_DUMP=$(BUILD)/refdump CK_RUN_SUITE=ref $(BUILD)/test_netc >/dev/null
	/usr/bin/python3 tools/ref_vs_torch.py --netc $(BUILD)/netc --dump $(BUILD)/refdump

test-unit: $(BUILD)/test_netc
	$(BUILD)/test_netc

test-asan:
	$(MAKE) BUILD=build/asan OPT="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=all" test-unit

# Leak and memory check of the unit tests and the CLI's main paths.
test-valgrind: $(BUILD)/netc $(BUILD)/test_netc
	CK_FORK=no valgrind --leak-check=full --error-exitcode=9 -q $(BUILD)/test_netc
	valgrind --leak-check=full --error-exitcode=9 -q $(BUILD)/netc check netdefs/voxresnet.net --train >/dev/null
	valgrind --leak-check=full --error-exitcode=9 -q $(BUILD)/netc graph netdefs/unet3d.net --json >/dev/null
	bash scripts/fetch_colin27.sh
	valgrind --leak-check=full --error-exitcode=9 -q $(BUILD)/netc plan build/data/Colin27Tiny -o $(BUILD)/vg_plan.net >/dev/null
	valgrind --leak-check=full --error-exitcode=9 -q $(BUILD)/netc eval build/data/Colin27Tiny/labelsTr \
	    build/data/Colin27Tiny/labelsTr >/dev/null
	valgrind --leak-check=full --error-exitcode=9 -q $(BUILD)/netc overlay build/data/Colin27Tiny/imagesTs/tiny_slab_0000.nii.gz \
	    build/data/Colin27Tiny/labelsTs/tiny_slab.nii.gz --montage 3 -o $(BUILD)/vg_overlay.png

# ---- demo --------------------------------------------------------------
# The committed generated code (generated/README.md); tests/cli_test.sh
# checks it is reproduced byte for byte.
generated: $(BUILD)/netc
	for n in unet2d unet3d; do for t in c cuda; do $(BUILD)/netc emit netdefs/$$n.net --target $$t -o generated || exit 1; done; done

demo: $(BUILD)/netc
	NETC=$(BUILD)/netc bash scripts/demo.sh

# The demo's model as a standalone binary on the whole Colin27 head and the
# held-out slab: Dice, HD95, time, ldd, an overlay PNG (docs/demo.md).
deploy-demo: $(BUILD)/netc
	NETC=$(BUILD)/netc bash scripts/deploy_demo.sh

# ---- benchmark: generated code vs PyTorch (not part of `make test`) ----
$(BUILD)/bench: tools/bench.c $(BUILD)/libnetc.a
	$(CC) $(CFLAGS_ALL) -o $@ tools/bench.c $(BUILD)/libnetc.a $(LIBS)

bench: $(BUILD)/netc $(BUILD)/bench
	/usr/bin/python3 tools/bench.py --netc $(BUILD)/netc --bench $(BUILD)/bench --out $(BUILD)/bench.json

# ---- fuzzing (clang libFuzzer) -----------------------------------------
FUZZ_SECONDS ?= 600
FUZZ_CC ?= clang
# The front end needs no LLVM.
FUZZ_SRC := $(filter-out compiler/l3_llvm%.c,$(COMPILER_SRC))
$(BUILD)/fuzz/fuzz_frontend: tests/fuzz/fuzz_frontend.c $(FUZZ_SRC) $(GEN_SRC)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) -std=c11 -g -O1 -fsanitize=fuzzer,address,undefined -Icompiler -Igrammar -I$(BUILD)/gen \
	    -o $@ tests/fuzz/fuzz_frontend.c $(FUZZ_SRC) $(GEN_SRC) -lm

fuzz: $(BUILD)/fuzz/fuzz_frontend
	@mkdir -p $(BUILD)/fuzz/corpus
	$< -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -timeout=5 -rss_limit_mb=2048 \
	    -dict=tests/fuzz/netc.dict -artifact_prefix=tests/fuzz/crashes/ $(BUILD)/fuzz/corpus tests/fuzz/seeds

clean:
	rm -rf build

-include $(shell find $(BUILD) -name '*.d' 2>/dev/null)
