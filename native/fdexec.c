/*
 * fdexec: the last step of a warm start (src/agent/warm.ts) for an exec that passed its output descriptors. The
 * parked process (bash, already in the exec's group) cannot receive descriptors; once it has its command it execs
 * this instead, which takes them from the agent over a socketpair and puts them in place, then execs the command
 * as before (the same pid, so the same group).
 *
 *   fdexec FD PROGRAM [ARGS...]
 *
 * Reads one byte and its descriptors from the unix socket FD: bit 1 of the byte, the first descriptor is the
 * command's stdout; bit 2, the next is its stderr. Anything else (no byte, a count that does not match, a
 * truncated message) ends it with 125 and one line on stderr, and nothing runs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "scm_rights.h"

#define MAX_FDS 2

static int fail(const char *what) {
  dprintf(2, "onmemos: %s\n", what);
  return 125;
}

int main(int argc, char **argv) {
  if (argc < 3) return fail("usage: fdexec FD PROGRAM [ARGS...]");
  char *end;
  long sock = strtol(argv[1], &end, 10);
  if (*end || sock < 3 || sock > 1000) return fail("fdexec: bad descriptor");
  unsigned char byte = 0;
  int fds[MAX_FDS], n = 0;
  ssize_t r = scm_recv((int)sock, &byte, 1, fds, MAX_FDS, &n, 0);
  int want = (byte & 1) + ((byte & 2) >> 1);
  if (r != 1 || (byte & ~3) || want != n) return fail("the exec's descriptors did not come");
  int at = 0;
  for (int target = 1; target <= 2; target++) {
    if (!(byte & target)) continue;
    if (dup2(fds[at], target) < 0) return fail("fdexec: dup2 failed");
    close(fds[at++]);
  }
  close((int)sock);
  execv(argv[2], argv + 2);
  dprintf(2, "onmemos: %s: %s\n", argv[2], strerror(errno));
  return 126;
}
