# contrib/mockllm/: bin/mockllm, the OpenAI-compatible mock backend
MOCKLLM_SRCS := $(filter-out contrib/mockllm/main.c,$(wildcard contrib/mockllm/*.c))
MOCKLLM_OBJS := $(call objs,$(MOCKLLM_SRCS))
PROGRAMS += $(BIN)/mockllm
$(BIN)/mockllm: $(call objs,contrib/mockllm/main.c) $(MOCKLLM_OBJS)

UNIT_TESTS += $(BUILD)/tests/test_mock_fault
$(BUILD)/tests/test_mock_fault: $(call objs,tests/unit/test_mock_fault.c contrib/mockllm/fault.c)
UNIT_TESTS += $(BUILD)/tests/test_mock_scan
$(BUILD)/tests/test_mock_scan: $(call objs,tests/unit/test_mock_scan.c contrib/mockllm/scan.c)
