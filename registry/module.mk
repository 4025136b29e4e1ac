# registry/: libregistry.a (schema, migrations, rendering, snapshot) and
# bin/promptctl. The gateway and the evaluator link $(REGISTRY_LIB).
REGISTRY_SRCS := $(filter-out registry/promptctl.c,$(wildcard registry/*.c))
REGISTRY_MIGRATIONS := $(sort $(wildcard migrations/[0-9][0-9][0-9][0-9]_*.sql))
REGISTRY_GEN := $(BUILD)/registry/gen/migrations_sql.c
REGISTRY_OBJS := $(call objs,$(REGISTRY_SRCS)) $(REGISTRY_GEN:.c=.o)
REGISTRY_LIB := $(BUILD)/libregistry.a
LIBS += $(REGISTRY_LIB)

$(REGISTRY_GEN): $(REGISTRY_MIGRATIONS) registry/embed.sh
	@mkdir -p $(dir $@)
	registry/embed.sh $@ $(REGISTRY_MIGRATIONS)

$(REGISTRY_GEN:.c=.o): $(REGISTRY_GEN)
	$(CC) $(ALL_CFLAGS) -c -o $@ $<

$(REGISTRY_LIB): $(REGISTRY_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	$(AR) rcs $@ $^

PROGRAMS += $(BIN)/promptctl
$(BIN)/promptctl: $(call objs,registry/promptctl.c) $(REGISTRY_LIB)

REGISTRY_TESTS := $(patsubst tests/unit/test_reg_%.c,%,$(filter-out \
    tests/unit/test_reg_util.c tests/unit/test_reg_bench.c,$(wildcard tests/unit/test_reg_*.c)))
UNIT_TESTS += $(patsubst %,$(BUILD)/tests/test_reg_%,$(REGISTRY_TESTS))
$(foreach t,$(REGISTRY_TESTS),$(eval $(BUILD)/tests/test_reg_$(t): \
    $(call objs,tests/unit/test_reg_$(t).c tests/unit/test_reg_util.c) $(REGISTRY_LIB)))

# bench (not a unit test): 1,000 prompts x 20 versions into a snapshot,
# prints the load time: make build/tests/test_reg_bench && build/tests/test_reg_bench
$(BUILD)/tests/test_reg_bench: $(call objs,tests/unit/test_reg_bench.c tests/unit/test_reg_util.c) $(REGISTRY_LIB)
