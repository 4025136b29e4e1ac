# contrib/bench/: bench tools. Built on demand (make $(BIN)/sseload, or
# make bench-all), neither by `make all` nor installed: not in PROGRAMS.
BENCH_TOOLS := $(BIN)/sseload $(BIN)/exposure-bench
$(BIN)/sseload: $(call objs,contrib/bench/sseload.c)
# the exposure writer alone (gateway/exposure.c): its CPU a record
$(BIN)/exposure-bench: $(call objs,contrib/bench/exposure.c gateway/exposure.c gateway/jscan.c gateway/log.c) $(BUILD)/libregistry.a
.PHONY: bench-all
