/*
 * Preloaded after the sanitizer runtimes by `make asan`: takes LD_PRELOAD
 * out of the environment once this process has started, so that the
 * processes the specs spawn (sh, nginx, curl, node, bin/truto) run without
 * the sanitizers.  Only the Lua process that loads build/asan's core.so is
 * checked; LeakSanitizer would otherwise report nginx's and the shell's
 * exit-time allocations.
 */
#include <stdlib.h>

__attribute__((constructor)) static void unpreload(void)
{
    unsetenv("LD_PRELOAD");
}
