# contrib/bench/: bench tools. Built on demand (make $(BIN)/sseload, or
# make bench-all), neither by `make all` nor installed: not in PROGRAMS.
BENCH_TOOLS := $(BIN)/sseload
$(BIN)/sseload: $(call objs,contrib/bench/sseload.c)
.PHONY: bench-all
