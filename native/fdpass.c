/*
 * fdpass: descriptors over a unix socket (SCM_RIGHTS), for onmemos' local exec. The CLI passes its own stdout
 * (and stderr) pipe to the session's agent, which gives it to the command as its fd 1 (2): the command's output
 * then reaches the caller's pipe with no copy through onmemos. An optimisation only: without this module every
 * exec is relayed over the WebSocket as before.
 *
 *   sendFds(socketFd, byte, fds[])          one data byte with the fds attached (synchronous sendmsg)
 *   recvFds(socketFd, timeoutMs, cb)        waits (poll, off the main thread) for one byte and the fds that came
 *                                           with it; cb(err, { byte, fds }); fds arrive close-on-exec
 *   outputFifo(fd)                          true when fd is a FIFO open for writing, which is then made blocking
 *                                           (a command writes to it as to any pipe); false for anything else
 *   closeOnExec(fd)                         sets FD_CLOEXEC on fd (the agent's second listening socket, which no
 *                                           command may inherit); false if it could not
 *   pipe()                                  [readFd, writeFd], both close-on-exec
 *   spawnDetached(file, argv[], env[], fds[])
 *                                           starts file in a session of its own with fds[i] as its descriptor i
 *                                           (-1: /dev/null for 0-2, none above), every signal at its default and no
 *                                           other descriptor; returns its pid, and reaps it when it ends (a thread
 *                                           waits for it). A fraction of a ms (posix_spawn),
 *                                           where node's child_process costs a process that has not loaded it
 *                                           ~4 ms (the local provider's launcher, `onmemos rm`'s remover)
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "scm_rights.h"

/* At most this many descriptors in one message (onmemos passes two). */
#define MAX_FDS 8

#define CHECK(call)                                                                                                    \
  do {                                                                                                                 \
    if ((call) != napi_ok) return NULL;                                                                                \
  } while (0)

static napi_value errno_error(napi_env env, int err, const char *what) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_value code, message, error;
  const char *name = err == ETIMEDOUT ? "ETIMEDOUT" : err == EPROTO ? "EPROTO" : err == ECONNRESET ? "ECONNRESET" : "ERR";
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &message);
  napi_create_error(env, code, message, &error);
  return error;
}

static int get_int(napi_env env, napi_value v, int32_t *out) {
  napi_valuetype t;
  if (napi_typeof(env, v, &t) != napi_ok || t != napi_number) return 0;
  return napi_get_value_int32(env, v, out) == napi_ok;
}

static napi_value send_fds(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t sock, byte;
  bool is_array = false;
  if (argc < 3 || !get_int(env, argv[0], &sock) || !get_int(env, argv[1], &byte) ||
      napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array || byte < 0 || byte > 255) {
    napi_throw_type_error(env, NULL, "sendFds(socketFd, byte, fds[])");
    return NULL;
  }
  uint32_t n;
  CHECK(napi_get_array_length(env, argv[2], &n));
  if (n > MAX_FDS) {
    napi_throw_range_error(env, NULL, "too many descriptors");
    return NULL;
  }
  int fds[MAX_FDS];
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    CHECK(napi_get_element(env, argv[2], i, &e));
    int32_t fd;
    if (!get_int(env, e, &fd) || fd < 0) {
      napi_throw_type_error(env, NULL, "fds must be descriptors");
      return NULL;
    }
    fds[i] = fd;
  }
  unsigned char data = (unsigned char)byte;
  ssize_t r = scm_send(sock, &data, 1, fds, (int)n);
  if (r != 1) {
    napi_throw(env, errno_error(env, r < 0 ? errno : EPROTO, "sendmsg"));
    return NULL;
  }
  return NULL;
}

typedef struct {
  napi_async_work work;
  napi_ref callback;
  int sock;
  int timeout_ms;
  int err;
  unsigned char byte;
  int fds[MAX_FDS];
  int nfds;
} recv_job;

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void recv_execute(napi_env env, void *data) {
  (void)env;
  recv_job *j = data;
  long long deadline = now_ms() + j->timeout_ms;
  for (;;) {
    unsigned char byte;
    ssize_t r = scm_recv(j->sock, &byte, 1, j->fds, MAX_FDS, &j->nfds, MSG_DONTWAIT);
    if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      long long left = deadline - now_ms();
      if (left <= 0) {
        j->err = ETIMEDOUT;
        return;
      }
      struct pollfd p = {.fd = j->sock, .events = POLLIN};
      int pr = poll(&p, 1, (int)left);
      if (pr < 0 && errno != EINTR) {
        j->err = errno;
        return;
      }
      continue;
    }
    if (r <= 0) {
      j->err = r == 0 ? ECONNRESET : errno;
      return;
    }
    j->byte = byte;
    return;
  }
}

static void recv_complete(napi_env env, napi_status status, void *data) {
  recv_job *j = data;
  napi_value cb, undefined, args[2];
  napi_get_reference_value(env, j->callback, &cb);
  napi_get_undefined(env, &undefined);
  if (status != napi_ok && j->err == 0) j->err = ECANCELED;
  if (j->err) {
    args[0] = errno_error(env, j->err, "recvmsg");
    args[1] = undefined;
  } else {
    napi_get_null(env, &args[0]);
    napi_create_object(env, &args[1]);
    napi_value byte, fds;
    napi_create_uint32(env, j->byte, &byte);
    napi_create_array_with_length(env, j->nfds, &fds);
    for (int i = 0; i < j->nfds; i++) {
      napi_value fd;
      napi_create_int32(env, j->fds[i], &fd);
      napi_set_element(env, fds, i, fd);
    }
    napi_set_named_property(env, args[1], "byte", byte);
    napi_set_named_property(env, args[1], "fds", fds);
  }
  napi_delete_reference(env, j->callback);
  napi_delete_async_work(env, j->work);
  free(j);
  napi_value ignored;
  napi_call_function(env, undefined, cb, 2, args, &ignored);
}

static napi_value recv_fds(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t sock, timeout;
  napi_valuetype t = napi_undefined;
  if (argc >= 3) napi_typeof(env, argv[2], &t);
  if (argc < 3 || !get_int(env, argv[0], &sock) || !get_int(env, argv[1], &timeout) || timeout < 0 ||
      t != napi_function) {
    napi_throw_type_error(env, NULL, "recvFds(socketFd, timeoutMs, callback)");
    return NULL;
  }
  recv_job *j = calloc(1, sizeof *j);
  if (!j) {
    napi_throw_error(env, NULL, "out of memory");
    return NULL;
  }
  j->sock = sock;
  j->timeout_ms = timeout;
  napi_value name;
  napi_create_string_utf8(env, "fdpass.recvFds", NAPI_AUTO_LENGTH, &name);
  if (napi_create_reference(env, argv[2], 1, &j->callback) != napi_ok ||
      napi_create_async_work(env, NULL, name, recv_execute, recv_complete, j, &j->work) != napi_ok ||
      napi_queue_async_work(env, j->work) != napi_ok) {
    free(j);
    napi_throw_error(env, NULL, "recvFds: cannot start");
    return NULL;
  }
  return NULL;
}

/* Calls test(fd) with the one descriptor argument; its answer as a boolean. */
static napi_value fd_predicate(napi_env env, napi_callback_info info, const char *usage, bool (*test)(int)) {
  size_t argc = 1;
  napi_value argv[1], result;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd;
  if (argc < 1 || !get_int(env, argv[0], &fd)) {
    napi_throw_type_error(env, NULL, usage);
    return NULL;
  }
  CHECK(napi_get_boolean(env, fd >= 0 && test(fd), &result));
  return result;
}

static bool is_output_fifo(int fd) {
  struct stat st;
  int flags = -1;
  bool ok = fstat(fd, &st) == 0 && S_ISFIFO(st.st_mode) && (flags = fcntl(fd, F_GETFL)) >= 0 &&
            (flags & O_ACCMODE) != O_RDONLY;
  if (ok && (flags & O_NONBLOCK)) ok = fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) == 0;
  return ok;
}

static bool set_close_on_exec(int fd) {
  int flags = fcntl(fd, F_GETFD);
  return flags >= 0 && fcntl(fd, F_SETFD, flags | FD_CLOEXEC) == 0;
}

static napi_value output_fifo(napi_env env, napi_callback_info info) {
  return fd_predicate(env, info, "outputFifo(fd)", is_output_fifo);
}

static napi_value close_on_exec(napi_env env, napi_callback_info info) {
  return fd_predicate(env, info, "closeOnExec(fd)", set_close_on_exec);
}

/* A JS string as a malloc'd C string, or NULL (not a string, or one with a NUL in it). */
static char *c_string(napi_env env, napi_value v) {
  size_t len;
  if (napi_get_value_string_utf8(env, v, NULL, 0, &len) != napi_ok) return NULL;
  char *s = malloc(len + 1);
  if (!s) return NULL;
  if (napi_get_value_string_utf8(env, v, s, len + 1, &len) != napi_ok || strlen(s) != len) {
    free(s);
    return NULL;
  }
  return s;
}

static void free_strings(char **list) {
  if (!list) return;
  for (char **p = list; *p; p++) free(*p);
  free(list);
}

/* A JS array of strings as a NULL-terminated list (at most 4096), or NULL. */
static char **c_strings(napi_env env, napi_value arr) {
  bool is_array = false;
  uint32_t n;
  if (napi_is_array(env, arr, &is_array) != napi_ok || !is_array || napi_get_array_length(env, arr, &n) != napi_ok ||
      n > 4096)
    return NULL;
  char **list = calloc(n + 1, sizeof *list);
  if (!list) return NULL;
  for (uint32_t i = 0; i < n; i++) {
    napi_value e;
    if (napi_get_element(env, arr, i, &e) != napi_ok || !(list[i] = c_string(env, e))) {
      free_strings(list);
      return NULL;
    }
  }
  return list;
}

/*
 * A spawned process is this process's child, which nothing here would reap (libuv waits only for its own): a
 * thread of its own (a small stack) waits for it, so that a long-lived onmemos (serve, an SDK user) keeps no
 * zombie of a launcher or remover that ended.
 */
static void *reap(void *arg) {
  pid_t pid = (pid_t)(intptr_t)arg;
  while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
  }
  return NULL;
}

static void reap_later(pid_t pid) {
  pthread_attr_t attr;
  pthread_t thread;
  if (pthread_attr_init(&attr) != 0) return;
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 64 * 1024);
  /* Signals go to node's own threads: this one blocks them all. */
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  pthread_create(&thread, &attr, reap, (void *)(intptr_t)pid);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  pthread_attr_destroy(&attr);
}

/* At most this many descriptors for a spawned process (0 to MAX_SLOTS - 1). */
#define MAX_SLOTS 16

static napi_value spawn_detached(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int slots[MAX_SLOTS], nslots = 0;
  bool ok = argc == 4;
  if (ok) {
    bool is_array = false;
    uint32_t n = 0;
    ok = napi_is_array(env, argv[3], &is_array) == napi_ok && is_array &&
         napi_get_array_length(env, argv[3], &n) == napi_ok && n <= MAX_SLOTS;
    for (uint32_t i = 0; ok && i < n; i++) {
      napi_value e;
      int32_t fd;
      ok = napi_get_element(env, argv[3], i, &e) == napi_ok && get_int(env, e, &fd) && fd >= -1;
      slots[nslots++] = fd;
    }
  }
  char *file = ok ? c_string(env, argv[0]) : NULL;
  char **args = file ? c_strings(env, argv[1]) : NULL;
  char **envp = args ? c_strings(env, argv[2]) : NULL;
  if (!envp || !args[0]) {
    free(file);
    free_strings(args);
    free_strings(envp);
    napi_throw_type_error(env, NULL, "spawnDetached(file, argv[], env[], fds[])");
    return NULL;
  }
  /* Each descriptor to pass, first copied clear of every slot: a dup2 into one slot must not overwrite another's
     source. */
  int high[MAX_SLOTS];
  int err = 0;
  for (int i = 0; i < nslots; i++) {
    high[i] = slots[i] < 0 ? -1 : fcntl(slots[i], F_DUPFD_CLOEXEC, MAX_SLOTS);
    if (slots[i] >= 0 && high[i] < 0 && !err) err = errno;
  }
  posix_spawnattr_t attr;
  posix_spawn_file_actions_t actions;
  posix_spawnattr_init(&attr);
  posix_spawn_file_actions_init(&actions);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  sigdelset(&all, SIGKILL);
  sigdelset(&all, SIGSTOP);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSID | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  for (int i = 0; i < 3 || i < nslots; i++) {
    if (i < nslots && high[i] >= 0) posix_spawn_file_actions_adddup2(&actions, high[i], i);
    else if (i < 3) posix_spawn_file_actions_addopen(&actions, i, "/dev/null", i == 0 ? O_RDONLY : O_WRONLY, 0);
    else posix_spawn_file_actions_addclose(&actions, i);
  }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
  posix_spawn_file_actions_addclosefrom_np(&actions, nslots > 3 ? nslots : 3);
#endif
  pid_t pid = -1;
  if (!err) err = posix_spawn(&pid, file, &actions, &attr, args, envp);
  posix_spawn_file_actions_destroy(&actions);
  posix_spawnattr_destroy(&attr);
  for (int i = 0; i < nslots; i++)
    if (high[i] >= 0) close(high[i]);
  free(file);
  free_strings(args);
  free_strings(envp);
  if (err != 0) {
    napi_throw(env, errno_error(env, err, "posix_spawn"));
    return NULL;
  }
  reap_later(pid);
  napi_value out;
  CHECK(napi_create_int32(env, pid, &out));
  return out;
}

static napi_value make_pipe(napi_env env, napi_callback_info info) {
  (void)info;
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) {
    napi_throw(env, errno_error(env, errno, "pipe"));
    return NULL;
  }
  napi_value out, r, w;
  CHECK(napi_create_array_with_length(env, 2, &out));
  CHECK(napi_create_int32(env, fds[0], &r));
  CHECK(napi_create_int32(env, fds[1], &w));
  CHECK(napi_set_element(env, out, 0, r));
  CHECK(napi_set_element(env, out, 1, w));
  return out;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"sendFds", NULL, send_fds, NULL, NULL, NULL, napi_enumerable, NULL},
      {"recvFds", NULL, recv_fds, NULL, NULL, NULL, napi_enumerable, NULL},
      {"outputFifo", NULL, output_fifo, NULL, NULL, NULL, napi_enumerable, NULL},
      {"closeOnExec", NULL, close_on_exec, NULL, NULL, NULL, napi_enumerable, NULL},
      {"spawnDetached", NULL, spawn_detached, NULL, NULL, NULL, napi_enumerable, NULL},
      {"pipe", NULL, make_pipe, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof *props, props) != napi_ok) return NULL;
  return exports;
}
