# tests/fuzz/: libFuzzer targets, one per tests/fuzz/fuzz_<name>.c, each
# feeding the project's own parsers (make fuzz, which builds with clang into
# build/fuzz; a plain make never builds them). Seeds: tests/fuzz/corpus/<name>/.
#
# The targets link the project's objects from archives, so a target pulls
# only the files it needs, and one that includes a .c to reach its static
# parser (fuzz_http, fuzz_prompt) is not given that file's object twice.
FUZZ_NAMES   := $(patsubst tests/fuzz/fuzz_%.c,%,$(sort $(wildcard tests/fuzz/fuzz_*.c)))
FUZZ_TARGETS := $(patsubst %,$(BUILD)/fuzz_%,$(FUZZ_NAMES))
FUZZ_GWLIB   := $(BUILD)/libgwfuzz.a
FUZZ_EVLLIB  := $(BUILD)/libevlfuzz.a
FUZZ_LINK    := -fsanitize=fuzzer,address,undefined
FUZZ_SECONDS ?= 30

$(FUZZ_GWLIB): $(call objs,$(GATEWAY_SRCS))
	@mkdir -p $(dir $@)
	rm -f $@
	$(AR) rcs $@ $^

$(FUZZ_EVLLIB): $(EVALUATOR_OBJS)
	@mkdir -p $(dir $@)
	rm -f $@
	$(AR) rcs $@ $^

# every target: its own object, the evaluator, the gateway, the registry
$(foreach n,$(FUZZ_NAMES),$(eval $(BUILD)/fuzz_$(n): \
    $(call objs,tests/fuzz/fuzz_$(n).c) $(FUZZ_EVLLIB) $(FUZZ_GWLIB) $(BUILD)/libregistry.a))

$(BUILD)/fuzz_%:
	@mkdir -p $(dir $@)
	$(CC) $(LDFLAGS) $(FUZZ_LINK) -o $@ $(filter %.o %.a,$^) $(LDLIBS)

.PHONY: fuzz-build fuzz-run
fuzz-build: $(FUZZ_TARGETS)

fuzz-run: $(FUZZ_TARGETS)
	@tests/fuzz/run.sh $(FUZZ_SECONDS) $(BUILD) $(FUZZ_NAMES)
