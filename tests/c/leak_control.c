/* Negative control for the memory checker in tests/c/run.sh: this program leaks a context on
 * purpose (it drops the only pointer to it), so valgrind (or LeakSanitizer) MUST report it. A
 * checker that passes this program would pass real leaks too. */
#include <stdio.h>

#include "osft.h"

int main(void) {
    osft_context *ctx = NULL;
    if (osft_context_create(OSFT_BACKEND_CPU, 0, &ctx) != OSFT_STATUS_OK) return 2;
    ctx = NULL; /* leaked: never destroyed */
    printf("leak_control: leaked one context on purpose\n");
    return ctx == NULL ? 0 : 3;
}
