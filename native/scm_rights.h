/*
 * Descriptors over a unix socket (SCM_RIGHTS), the one way native/ sends and takes them: fdpass.c (the CLI and the
 * agent), fdexec.c (a parked process) and launcher.c (the sandbox's go). A message is some data bytes with up to
 * SCM_MAX_FDS descriptors attached.
 */
#ifndef ONMEMOS_SCM_RIGHTS_H
#define ONMEMOS_SCM_RIGHTS_H

#include <errno.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <unistd.h>

#define SCM_MAX_FDS 32

/* Sends `len` (at least 1) bytes of `data` with `n` descriptors attached; the bytes sent, or -1 (errno). */
static inline ssize_t scm_send(int sock, const void *data, size_t len, const int *fds, int n) {
  if (n < 0 || n > SCM_MAX_FDS || len == 0) {
    errno = EINVAL;
    return -1;
  }
  union {
    char buf[CMSG_SPACE(sizeof(int) * SCM_MAX_FDS)];
    struct cmsghdr align;
  } control;
  memset(&control, 0, sizeof control);
  struct iovec iov = {.iov_base = (void *)data, .iov_len = len};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1};
  if (n > 0) {
    msg.msg_control = control.buf;
    msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n);
    struct cmsghdr *c = CMSG_FIRSTHDR(&msg);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * (size_t)n);
  }
  ssize_t r;
  do r = sendmsg(sock, &msg, MSG_NOSIGNAL);
  while (r < 0 && errno == EINTR);
  return r;
}

/*
 * Takes one message: up to `cap` bytes into `data` and its descriptors (close-on-exec) into `fds`, *nfds of them.
 * `flags` adds to recvmsg's (MSG_DONTWAIT). Returns the bytes taken (0 at EOF), or -1 with errno (EINTR is
 * retried). More than `max` descriptors, or a message cut short (its data or its descriptors), is EPROTO, and every
 * descriptor that came is closed: a caller never holds part of a message.
 */
static inline ssize_t scm_recv(int sock, void *data, size_t cap, int *fds, int max, int *nfds, int flags) {
  union {
    char buf[CMSG_SPACE(sizeof(int) * SCM_MAX_FDS)];
    struct cmsghdr align;
  } control;
  struct iovec iov = {.iov_base = data, .iov_len = cap};
  struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf, .msg_controllen = sizeof control.buf};
  *nfds = 0;
  ssize_t r;
  do r = recvmsg(sock, &msg, flags | MSG_CMSG_CLOEXEC);
  while (r < 0 && errno == EINTR);
  if (r < 0) return -1;
  int came[SCM_MAX_FDS], n = 0;
  for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k && n < SCM_MAX_FDS; i++) memcpy(&came[n++], (int *)CMSG_DATA(c) + i, sizeof(int));
  }
  if (n > max || (msg.msg_flags & (MSG_CTRUNC | MSG_TRUNC))) {
    for (int i = 0; i < n; i++) close(came[i]);
    errno = EPROTO;
    return -1;
  }
  memcpy(fds, came, sizeof(int) * (size_t)n);
  *nfds = n;
  return r;
}

#endif
