# gateway/: bin/promptgate, the reverse proxy daemon
GATEWAY_SRCS := $(filter-out gateway/main.c,$(wildcard gateway/*.c))
# prompt.c and exposure.c link libregistry ($(REGISTRY_LIB), spelt out: the
# registry module.mk is read after this one); last, after the objects
GATEWAY_OBJS := $(call objs,$(GATEWAY_SRCS)) $(BUILD)/libregistry.a
PROGRAMS += $(BIN)/promptgate
$(BIN)/promptgate: $(call objs,gateway/main.c) $(GATEWAY_OBJS)

UNIT_TESTS += $(BUILD)/tests/test_gw_config $(BUILD)/tests/test_gw_sse $(BUILD)/tests/test_gw_error $(BUILD)/tests/test_gw_jscan
$(BUILD)/tests/test_gw_config: $(call objs,tests/unit/test_gw_config.c) $(GATEWAY_OBJS)
$(BUILD)/tests/test_gw_sse: $(call objs,tests/unit/test_gw_sse.c) $(GATEWAY_OBJS)
$(BUILD)/tests/test_gw_error: $(call objs,tests/unit/test_gw_error.c) $(GATEWAY_OBJS)
$(BUILD)/tests/test_gw_jscan: $(call objs,tests/unit/test_gw_jscan.c) $(GATEWAY_OBJS)
UNIT_TESTS += $(BUILD)/tests/test_gw_prompt
$(BUILD)/tests/test_gw_prompt: $(call objs,tests/unit/test_gw_prompt.c) $(GATEWAY_OBJS)
# the exposure writer thread, its record pool and a loop's hand-overs
TSAN_UNIT_TESTS += test_gw_prompt
UNIT_TESTS += $(BUILD)/tests/test_gw_limit
$(BUILD)/tests/test_gw_limit: $(call objs,tests/unit/test_gw_limit.c) $(GATEWAY_OBJS)
# the limiter shared by worker threads: its threaded tests under TSan too
TSAN_UNIT_TESTS += test_gw_limit
UNIT_TESTS += $(BUILD)/tests/test_gw_chunked
$(BUILD)/tests/test_gw_chunked: $(call objs,tests/unit/test_gw_chunked.c) $(GATEWAY_OBJS)
# routing (pool.c, breaker.c): linked without libregistry, which they do not use
ROUTING_TEST_OBJS := $(call objs,gateway/pool.c gateway/breaker.c gateway/config.c gateway/log.c gateway/error.c gateway/tls.c)
UNIT_TESTS += $(BUILD)/tests/test_gw_breaker $(BUILD)/tests/test_gw_pool
$(BUILD)/tests/test_gw_breaker: $(call objs,tests/unit/test_gw_breaker.c) $(ROUTING_TEST_OBJS)
$(BUILD)/tests/test_gw_pool: $(call objs,tests/unit/test_gw_pool.c) $(ROUTING_TEST_OBJS)
UNIT_TESTS += $(BUILD)/tests/test_gw_canon
$(BUILD)/tests/test_gw_canon: $(call objs,tests/unit/test_gw_canon.c) $(GATEWAY_OBJS)
# routing: the anthropic provider's translation (pure: no loop, no config)
UNIT_TESTS += $(BUILD)/tests/test_gw_anthropic
$(BUILD)/tests/test_gw_anthropic: $(call objs,tests/unit/test_gw_anthropic.c gateway/anthropic.c gateway/error.c gateway/jscan.c)
# metrics (issue 9)
UNIT_TESTS += $(BUILD)/tests/test_gw_metrics
$(BUILD)/tests/test_gw_metrics: $(call objs,tests/unit/test_gw_metrics.c) $(GATEWAY_OBJS)
# metrics across worker threads (issue 9, point 3): two workers' objects
# updated, scraped and reloaded from 4 threads; `make tsan-unit` runs it
# under ThreadSanitizer (TSAN_UNIT_TESTS: the top Makefile's rule)
UNIT_TESTS += $(BUILD)/tests/test_gw_metrics_mt
$(BUILD)/tests/test_gw_metrics_mt: $(call objs,tests/unit/test_gw_metrics_mt.c) $(GATEWAY_OBJS)
TSAN_UNIT_TESTS += test_gw_metrics_mt
# workers (issue 9): pools and backend states hammered from 4 threads;
# `make tsan-unit` builds it with ThreadSanitizer into build/tsan and runs it
UNIT_TESTS += $(BUILD)/tests/test_gw_pool_threads
$(BUILD)/tests/test_gw_pool_threads: $(call objs,tests/unit/test_gw_pool_threads.c) $(ROUTING_TEST_OBJS)
TSAN_UNIT_TESTS += test_gw_pool_threads
