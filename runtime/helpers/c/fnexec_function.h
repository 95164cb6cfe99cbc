/* fnexec function runtime for C and C++ (header only, POSIX, no dependencies): the fnexec/1 frame
 * protocol. See fnexec-protocol(7).
 *
 *   #include "fnexec_function.h"
 *   static void handle(const fnexec_event* ev, fnexec_response* res) {
 *     fnexec_respond(res, ev->data, ev->len);                  // or fnexec_fail(res, "Type", "msg")
 *   }
 *   int main(void) {
 *     fnexec_take_stdio();                                     // first: printf now goes to the log
 *     if (init() != 0) fnexec_init_failed("InitError", "cannot open the model");   // exits 1
 *     return fnexec_serve(handle);
 *   }
 *
 * Under fnexec with lifecycle fresh or reuse (FNEXEC_PROTOCOL=fnexec/1), fnexec_serve() sends READY
 * and calls the handler once per EVENT until stdin closes, then returns 0. Without FNEXEC_PROTOCOL
 * (lifecycle oneshot, or a shell) it calls the handler once with all of stdin, writes the result to
 * stdout and returns 0, or 1 after a failure (its JSON on stderr).
 *
 * The frame channel is private: fnexec_take_stdio() moves the original stdin and stdout to
 * close-on-exec fds of its own, points fd 1 at stderr (the function's log) and fd 0 at /dev/null.
 * Include this header in one file only; its state is static. It needs POSIX.1-2008 (the default of
 * gcc and clang; with a strict -std=c99 add -D_POSIX_C_SOURCE=200809L). */
#ifndef FNEXEC_FUNCTION_H
#define FNEXEC_FUNCTION_H

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#define FNEXEC_PROTOCOL "fnexec/1"
#define FNEXEC_MAX_HEADER 256
#define FNEXEC_MAX_LENGTH ((uint64_t)1 << 40)

typedef struct fnexec_event {
  const char* id;            /* the event id, NUL-terminated ("oneshot" without fnexec/1) */
  int64_t deadline_ms;       /* unix epoch milliseconds; -1 when no deadline is known (oneshot) */
  const unsigned char* data; /* the payload, exact; data[len] is a NUL for convenience */
  size_t len;
  const char* function_name; /* FNEXEC_FUNCTION_NAME, or "" */
} fnexec_event;

typedef struct fnexec_response {
  const void* data; /* the result: set with fnexec_respond */
  size_t len;
  int failed; /* set with fnexec_fail */
  char error_type[128];
  char error_message[1024];
} fnexec_response;

typedef void (*fnexec_handler)(const fnexec_event* event, fnexec_response* response);

static struct {
  int taken;
  int in_fd, out_fd;
  char buf[65536]; /* read buffer: [start, end) not yet consumed */
  size_t start, end;
  unsigned char* result; /* fnexec_respond's copy, reused across events */
  size_t result_cap;
} fnexec_p_state;

/* Moves the frame channel to private fds; idempotent. Call it first in main(), before any output. */
static inline void fnexec_take_stdio(void) {
  if (fnexec_p_state.taken) return;
  fflush(stdout);
  fnexec_p_state.in_fd = fcntl(0, F_DUPFD_CLOEXEC, 3);
  fnexec_p_state.out_fd = fcntl(1, F_DUPFD_CLOEXEC, 3);
  if (fnexec_p_state.in_fd < 0 || fnexec_p_state.out_fd < 0) {
    perror("fnexec_function.h: dup stdin/stdout");
    exit(1);
  }
  /* The function's pipe ends are its own: blocking I/O on them cannot stall fnexec's side. */
  fcntl(fnexec_p_state.in_fd, F_SETFL, fcntl(fnexec_p_state.in_fd, F_GETFL) & ~O_NONBLOCK);
  fcntl(fnexec_p_state.out_fd, F_SETFL, fcntl(fnexec_p_state.out_fd, F_GETFL) & ~O_NONBLOCK);
  dup2(2, 1);
  int null_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (null_fd >= 0) {
    dup2(null_fd, 0);
    close(null_fd);
  }
  setvbuf(stdout, NULL, _IOLBF, 0); /* a printf reaches the log before the event's reply */
  fnexec_p_state.taken = 1;
}

/* The result bytes, copied (the handler's buffer may be freed when it returns). */
static inline void fnexec_respond(fnexec_response* r, const void* data, size_t len) {
  if (len > fnexec_p_state.result_cap) {
    unsigned char* grown = (unsigned char*)realloc(fnexec_p_state.result, len);
    if (grown == NULL) {
      fprintf(stderr, "fnexec_function.h: out of memory for a %zu-byte result\n", len);
      exit(1);
    }
    fnexec_p_state.result = grown;
    fnexec_p_state.result_cap = len;
  }
  if (len > 0) memcpy(fnexec_p_state.result, data, len);
  r->data = fnexec_p_state.result;
  r->len = len;
}

/* The result bytes without a copy: data must stay valid after the handler returns (static data). */
static inline void fnexec_respond_nocopy(fnexec_response* r, const void* data, size_t len) {
  r->data = data;
  r->len = len;
}

/* The event fails: an ERROR frame with {"errorType": type, "errorMessage": message}. */
static inline void fnexec_fail(fnexec_response* r, const char* type, const char* message) {
  r->failed = 1;
  snprintf(r->error_type, sizeof r->error_type, "%s", type ? type : "Error");
  snprintf(r->error_message, sizeof r->error_message, "%s", message ? message : "");
}

static inline int64_t fnexec_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Milliseconds left before the event's deadline (0 when past it); INT64_MAX when none is known. */
static inline int64_t fnexec_remaining_ms(const fnexec_event* e) {
  if (e->deadline_ms < 0) return INT64_MAX;
  int64_t left = e->deadline_ms - fnexec_now_ms();
  return left > 0 ? left : 0;
}

static inline void fnexec_p_write_all(const struct iovec* iov_in, int n) {
  struct iovec iov[3];
  memcpy(iov, iov_in, sizeof(struct iovec) * (size_t)n);
  int i = 0;
  while (i < n) {
    ssize_t w = writev(fnexec_p_state.out_fd, iov + i, n - i);
    if (w < 0) {
      if (errno == EINTR) continue;
      perror("fnexec_function.h: write a frame");
      exit(1);
    }
    size_t done = (size_t)w;
    while (i < n && done >= iov[i].iov_len) done -= iov[i++].iov_len;
    if (i < n) {
      iov[i].iov_base = (char*)iov[i].iov_base + done;
      iov[i].iov_len -= done;
    }
  }
}

/* A frame: header, then the payload and "\n" when has_payload. */
static inline void fnexec_p_send(const char* header, size_t header_len, const void* payload, size_t len,
                                 int has_payload) {
  fflush(stdout);
  fflush(stderr);
  struct iovec iov[3];
  iov[0].iov_base = (void*)header;
  iov[0].iov_len = header_len;
  iov[1].iov_base = (void*)payload;
  iov[1].iov_len = len;
  iov[2].iov_base = (void*)"\n";
  iov[2].iov_len = 1;
  if (has_payload)
    fnexec_p_write_all(iov, 3);
  else
    fnexec_p_write_all(iov, 1);
}

/* Appends s as a JSON string to out (capacity cap, at least 6 * strlen(s) + 3). */
static inline size_t fnexec_p_json_string(char* out, const char* s) {
  size_t n = 0;
  out[n++] = '"';
  for (const unsigned char* p = (const unsigned char*)s; *p; ++p) {
    if (*p == '"' || *p == '\\') {
      out[n++] = '\\';
      out[n++] = (char)*p;
    } else if (*p < 0x20) {
      n += (size_t)sprintf(out + n, "\\u%04x", *p);
    } else {
      out[n++] = (char)*p;
    }
  }
  out[n++] = '"';
  return n;
}

/* {"errorType":...,"errorMessage":...,"stackTrace":[]} into out (at least 8 KiB). */
static inline size_t fnexec_p_error_json(char* out, const char* type, const char* message) {
  size_t n = 0;
  n += (size_t)sprintf(out + n, "{\"errorType\":");
  n += fnexec_p_json_string(out + n, type);
  n += (size_t)sprintf(out + n, ",\"errorMessage\":");
  n += fnexec_p_json_string(out + n, message);
  n += (size_t)sprintf(out + n, ",\"stackTrace\":[]}");
  return n;
}

/* Init failed: sends INIT_ERROR (under fnexec/1) or logs the error, then exits 1. */
static inline void fnexec_init_failed(const char* type, const char* message) {
  fnexec_take_stdio();
  char body[8192], header[64];
  size_t n = fnexec_p_error_json(body, type ? type : "InitError", message ? message : "");
  const char* protocol = getenv("FNEXEC_PROTOCOL");
  if (protocol != NULL && *protocol != '\0') {
    int h = snprintf(header, sizeof header, "INIT_ERROR %zu\n", n);
    fnexec_p_send(header, (size_t)h, body, n, 1);
  } else {
    fprintf(stderr, "%.*s\n", (int)n, body);
  }
  exit(1);
}

/* Reads up to the buffer's free space; 0 at end of input. */
static inline size_t fnexec_p_fill(void) {
  if (fnexec_p_state.start > 0) {
    memmove(fnexec_p_state.buf, fnexec_p_state.buf + fnexec_p_state.start,
            fnexec_p_state.end - fnexec_p_state.start);
    fnexec_p_state.end -= fnexec_p_state.start;
    fnexec_p_state.start = 0;
  }
  for (;;) {
    ssize_t r = read(fnexec_p_state.in_fd, fnexec_p_state.buf + fnexec_p_state.end,
                     sizeof fnexec_p_state.buf - fnexec_p_state.end);
    if (r >= 0) {
      fnexec_p_state.end += (size_t)r;
      return (size_t)r;
    }
    if (errno != EINTR) {
      perror("fnexec_function.h: read an event");
      exit(2);
    }
  }
}

/* Exactly len bytes into out; 0 when input ends first. */
static inline int fnexec_p_read_exact(unsigned char* out, size_t len) {
  size_t have = fnexec_p_state.end - fnexec_p_state.start;
  if (have > len) have = len;
  memcpy(out, fnexec_p_state.buf + fnexec_p_state.start, have);
  fnexec_p_state.start += have;
  while (have < len) { /* the rest of a large payload is read straight into place */
    ssize_t r = read(fnexec_p_state.in_fd, out + have, len - have);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) return 0;
    have += (size_t)r;
  }
  return 1;
}

static inline int fnexec_p_parse_number(const char* s, size_t n, uint64_t* v) {
  if (n == 0 || n > 19 || (n > 1 && s[0] == '0')) return 0;
  *v = 0;
  for (size_t i = 0; i < n; ++i) {
    if (s[i] < '0' || s[i] > '9') return 0;
    *v = *v * 10 + (uint64_t)(s[i] - '0');
  }
  return 1;
}

static inline void fnexec_p_protocol_error(const char* what) {
  fprintf(stderr, "fnexec_function.h: protocol error from fnexec: %s\n", what);
  exit(2);
}

/* Reads one EVENT; 0 at end of input. id has room for 65 bytes; *payload is malloc'd. */
static inline int fnexec_p_read_event(char* id, int64_t* deadline_ms, unsigned char** payload, size_t* len) {
  char* nl;
  for (;;) {
    size_t have = fnexec_p_state.end - fnexec_p_state.start;
    nl = (char*)memchr(fnexec_p_state.buf + fnexec_p_state.start, '\n',
                       have < FNEXEC_MAX_HEADER ? have : FNEXEC_MAX_HEADER);
    if (nl != NULL) break;
    if (have >= FNEXEC_MAX_HEADER) fnexec_p_protocol_error("an event header has no newline within 256 bytes");
    if (fnexec_p_fill() == 0) {
      if (have == 0) return 0;
      fnexec_p_protocol_error("input ended inside an event header");
    }
  }
  char* line = fnexec_p_state.buf + fnexec_p_state.start;
  size_t line_len = (size_t)(nl - line);
  fnexec_p_state.start += line_len + 1;
  /* EVENT <id> <deadline_ms> <len> */
  const char* f[4];
  size_t flen[4], nf = 0;
  for (size_t i = 0, s = 0; i <= line_len; ++i) {
    if (i == line_len || line[i] == ' ') {
      if (nf == 4) fnexec_p_protocol_error("an event header has too many fields");
      f[nf] = line + s;
      flen[nf++] = i - s;
      s = i + 1;
    }
  }
  uint64_t deadline = 0, n = 0;
  if (nf != 4 || flen[0] != 5 || memcmp(f[0], "EVENT", 5) != 0 || flen[1] == 0 || flen[1] > 64 ||
      !fnexec_p_parse_number(f[2], flen[2], &deadline) || !fnexec_p_parse_number(f[3], flen[3], &n) ||
      n > FNEXEC_MAX_LENGTH)
    fnexec_p_protocol_error("expected an 'EVENT <id> <deadline_ms> <len>' header");
  for (size_t i = 0; i < flen[1]; ++i) {
    char c = f[1][i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-'))
      fnexec_p_protocol_error("an event id has a character outside A-Za-z0-9._-");
  }
  memcpy(id, f[1], flen[1]);
  id[flen[1]] = '\0';
  *deadline_ms = (int64_t)deadline;
  *payload = (unsigned char*)malloc((size_t)n + 1);
  if (*payload == NULL) fnexec_p_protocol_error("out of memory for the event's payload");
  unsigned char newline = 0;
  if (!fnexec_p_read_exact(*payload, (size_t)n) || !fnexec_p_read_exact(&newline, 1) || newline != '\n')
    fnexec_p_protocol_error("an event's payload is short or not followed by a newline");
  (*payload)[n] = '\0';
  *len = (size_t)n;
  return 1;
}

static inline int fnexec_p_serve_once(fnexec_handler handler, const char* function_name) {
  size_t cap = 65536, len = 0;
  unsigned char* data = (unsigned char*)malloc(cap + 1);
  for (;;) {
    if (data == NULL) fnexec_p_protocol_error("out of memory for the event");
    if (len == cap) data = (unsigned char*)realloc(data, (cap *= 2) + 1);
    if (data == NULL) continue;
    ssize_t r = read(fnexec_p_state.in_fd, data + len, cap - len);
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    len += (size_t)r;
  }
  data[len] = '\0';
  fnexec_event ev = {"oneshot", -1, data, len, function_name};
  fnexec_response res;
  memset(&res, 0, sizeof res);
  handler(&ev, &res);
  free(data);
  if (res.failed) {
    char body[8192];
    size_t n = fnexec_p_error_json(body, res.error_type, res.error_message);
    fprintf(stderr, "%.*s\n", (int)n, body);
    return 1;
  }
  fnexec_p_send((const char*)res.data, res.len, NULL, 0, 0);
  return 0;
}

/* Answers events with handler; see the top of this file. */
static inline int fnexec_serve(fnexec_handler handler) {
  fnexec_take_stdio();
  const char* function_name = getenv("FNEXEC_FUNCTION_NAME");
  if (function_name == NULL) function_name = "";
  const char* protocol = getenv("FNEXEC_PROTOCOL");
  if (protocol == NULL || *protocol == '\0') return fnexec_p_serve_once(handler, function_name);
  if (strcmp(protocol, FNEXEC_PROTOCOL) != 0)
    fnexec_init_failed("Runtime.ProtocolError",
                       "FNEXEC_PROTOCOL is not fnexec/1, the protocol of this runtime");
  static const char ready[] = "READY " FNEXEC_PROTOCOL "\n";
  fnexec_p_send(ready, sizeof ready - 1, NULL, 0, 0);
  char id[65], header[128], error_body[8192];
  unsigned char* payload;
  fnexec_event ev;
  for (;;) {
    if (!fnexec_p_read_event(id, &ev.deadline_ms, &payload, &ev.len)) return 0;
    ev.id = id;
    ev.data = payload;
    ev.function_name = function_name;
    fnexec_response res;
    res.data = NULL;
    res.len = 0;
    res.failed = 0;
    handler(&ev, &res);
    const void* body = res.data;
    size_t n = res.len;
    if (res.failed) {
      n = fnexec_p_error_json(error_body, res.error_type, res.error_message);
      body = error_body;
    }
    int h = snprintf(header, sizeof header, "%s %s %zu\n", res.failed ? "ERROR" : "OK", id, n);
    fnexec_p_send(header, (size_t)h, body, n, 1);
    free(payload);
  }
}

#endif /* FNEXEC_FUNCTION_H */
