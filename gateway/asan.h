/*
 * asan.h - marking memory that is kept for reuse, for AddressSanitizer.
 *
 * An object put aside for reuse instead of freed is poisoned while it
 * waits, so a use after its owner ended is still reported as one; outside
 * sanitizer builds the marks cost nothing.
 */
#ifndef GW_ASAN_H
#define GW_ASAN_H

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#else
#define ASAN_POISON_MEMORY_REGION(addr, size) ((void)(addr), (void)(size))
#define ASAN_UNPOISON_MEMORY_REGION(addr, size) ((void)(addr), (void)(size))
#endif

#endif
