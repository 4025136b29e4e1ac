# contrib/bench/: bench tools. Built on demand (make $(BIN)/sseload, or
# make bench-all), neither by `make all` nor installed: not in PROGRAMS.
BENCH_TOOLS := $(BIN)/sseload $(BIN)/exposure-bench $(BIN)/fdtable
$(BIN)/sseload: $(call objs,contrib/bench/sseload.c)
# the exposure writer alone (gateway/exposure.c): its CPU a record
$(BIN)/exposure-bench: $(call objs,contrib/bench/exposure.c gateway/exposure.c gateway/jscan.c gateway/log.c) $(BUILD)/libregistry.a
# what a shared file table costs socket calls (gateway/main.c, own_file_table)
$(BIN)/fdtable: $(call objs,contrib/bench/fdtable.c)
.PHONY: bench-all
