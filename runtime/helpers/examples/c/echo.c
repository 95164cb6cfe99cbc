/* Example fnexec function in C: echoes the event's bytes exactly.
 *
 *   fnexec run --lifecycle reuse IMAGE -- /echo
 *
 * Test hooks (used by fnexec's own tests), by the event's first bytes: "raise:MSG" fails the event
 * with errorType ValueError, "print:TEXT" printf()s and write()s TEXT to fd 1 (both are the log) and
 * echoes, "count" answers how many events this process has seen, "remaining" the milliseconds left
 * before the deadline. EXAMPLE_FAIL_INIT=1 makes init fail. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fnexec_function.h"

static unsigned long seen; /* state that carries across events in `reuse` */

static int starts_with(const fnexec_event* ev, const char* prefix) {
  size_t n = strlen(prefix);
  return ev->len >= n && memcmp(ev->data, prefix, n) == 0;
}

static void handle(const fnexec_event* ev, fnexec_response* res) {
  char text[64];
  ++seen;
  if (starts_with(ev, "raise:")) {
    fnexec_fail(res, "ValueError", (const char*)ev->data + 6);
  } else if (starts_with(ev, "count")) {
    fnexec_respond(res, text, (size_t)snprintf(text, sizeof text, "%lu", seen));
  } else if (starts_with(ev, "remaining")) {
    fnexec_respond(res, text,
                   (size_t)snprintf(text, sizeof text, "%lld", (long long)fnexec_remaining_ms(ev)));
  } else {
    if (starts_with(ev, "print:")) {
      printf("%s\n", (const char*)ev->data + 6);
      if (write(1, "fd1\n", 4) != 4) perror("write");
    }
    fnexec_respond(res, ev->data, ev->len);
  }
}

int main(void) {
  fnexec_take_stdio();
  if (getenv("EXAMPLE_FAIL_INIT") != NULL) fnexec_init_failed("InitError", "EXAMPLE_FAIL_INIT is set");
  return fnexec_serve(handle);
}
