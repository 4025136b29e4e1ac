# evaluator/: bin/prompteval, which scores A/B samples per prompt version
# (fact checking, conversion statistics), writes reports and replays
# samples through a running gateway. Links the registry library for --db.
# evaluator/module.mk is read before registry/module.mk (sorted include), so
# $(REGISTRY_LIB) is still empty here: name the archive directly.
EVALUATOR_REGLIB := $(BUILD)/libregistry.a
EVALUATOR_SRCS := $(filter-out evaluator/main.c,$(wildcard evaluator/*.c))
EVALUATOR_OBJS := $(call objs,$(EVALUATOR_SRCS))
ifneq ($(wildcard evaluator/main.c),)
PROGRAMS += $(BIN)/prompteval
endif
$(BIN)/prompteval: $(call objs,evaluator/main.c) $(EVALUATOR_OBJS) $(EVALUATOR_REGLIB)

EVALUATOR_TESTS := $(patsubst tests/unit/test_evl_%.c,%,$(wildcard tests/unit/test_evl_*.c))
UNIT_TESTS += $(patsubst %,$(BUILD)/tests/test_evl_%,$(EVALUATOR_TESTS))
$(foreach t,$(EVALUATOR_TESTS),$(eval $(BUILD)/tests/test_evl_$(t): \
    $(call objs,tests/unit/test_evl_$(t).c) $(EVALUATOR_OBJS) $(EVALUATOR_REGLIB)))

