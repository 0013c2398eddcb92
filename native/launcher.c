/*
 * onmemos-launcher: one per local session, its lifeline and expiry timer (src/providers/local/launch.ts starts it,
 * as root or as the rootless user). It does with system calls what would otherwise take a shell and eight programs
 * (unshare, mount, setpriv, nsenter, sleep), so a session starts with three execs: this, bwrap and slirp4netns
 * (and mkfs.ext4 once per disk size, as root).
 *
 *   onmemos-launcher K MKFS_ARGV[K] BWRAP_ARGS...
 *
 * K is the number of mkfs.ext4's argv entries that follow (the last is the file it makes; 0 without a disk). Everything else comes from the
 * environment launch.ts sets (ONMEMOS_*, below). No value is ever given to a shell or parsed beyond a number.
 *
 * It is started early in a create, before the creator has written the session's files: it makes the disk and the
 * sandbox's namespaces while the creator works, and opens the files and makes the agent's listening sockets itself
 * at the creator's go-ahead. In order:
 *  1. It closes every descriptor but 0 (the go-ahead), 1 and 2 (the session log) and ONMEMOS_KEEP_FDS (bwrap's
 *     info pipe and slirp4netns' ready pipe).
 *  2. As root (ONMEMOS_UID set): its own mount namespace, private to the host, whose mounts it then makes shared,
 *     so what it mounts later (the disk) reaches the sandbox's namespace, made as a slave of it. It starts making
 *     the disk in a child: an empty ext4 filesystem copied in from the disk cache (made with mkfs.ext4 when there
 *     is none), a loop mount (nosuid, nodev) at ONMEMOS_DATA_MOUNT, the data directories, and the host
 *     directories bound into the session (ONMEMOS_BIND_i) under it. It mounts a
 *     private /dev/net/tun where asked (ONMEMOS_TUN_NODE).
 *  3. The sandbox's first process, at once: it joins the session's cgroup, drops to the session's host uid (as
 *     root), makes the user (root mapped to that uid), mount and (ONMEMOS_UNSHARE_NET) network namespaces, as
 *     rootless mounts the data tmpfs and stages the binds, says "A", and waits for the go, which brings its
 *     descriptors. On the go it puts them in place and becomes bwrap; on EOF it ends before anything of the
 *     session runs. Its output (bwrap's, the agent's) reaches the session log through a child that copies at most
 *     ONMEMOS_LOG_BYTES: a session process can write to its agent's descriptors, and must not fill the host's disk
 *     through them.
 *  4. At "A", in outbound mode, slirp4netns on the sandbox's network namespace, as the session's uid, inside the
 *     session's user namespace (so its own sandbox can drop what it does not need), with a parent-death signal
 *     set after the uid change.
 *  5. The creator's go-ahead on stdin (EOF: the creator died first, and nothing of the session runs). It then opens
 *     the files bwrap copies into the sandbox (ONMEMOS_FD_n: the file for descriptor n) and makes the agent's
 *     listening sockets (ONMEMOS_SOCKET_n: a name in ONMEMOS_SESSION_DIR for descriptor n), and once the disk is
 *     mounted gives the sandbox its go with them. bwrap (--die-with-parent) and slirp4netns die with the launcher.
 *  6. It waits until the sandbox ends or the expiry (unix seconds, read again from ONMEMOS_EXPIRES_FILE each time
 *     its timer ends, so `onmemos extend` moves it) passes; then it kills the sandbox and slirp4netns, and at the
 *     expiry removes the session with `onmemos rm`. It reads nothing a session can write.
 *
 * Any failure: one line on stderr (the session log) and exit 125.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <linux/loop.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "scm_rights.h"

#define FAIL 125
/* The launcher's own pipes go at or above this, clear of the descriptors it passes down (all below 64). */
#define HIGH_FD 64
#define MAX_KEEP 32
/* The descriptors the go brings the sandbox: at most this many. */
#define MAX_DATA 32

static int keep[MAX_KEEP], nkeep;
static int net_ready = -1;
static uid_t uid;
static int root;

static void say(const char *fmt, ...) {
  char line[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(line, sizeof line, fmt, ap);
  va_end(ap);
  dprintf(2, "onmemos-launcher: %s\n", line);
}

static void die(const char *what) {
  say("%s: %s", what, strerror(errno));
  _exit(FAIL);
}

static const char *env(const char *name) {
  const char *v = getenv(name);
  return v ? v : "";
}

/* A non-negative decimal number, or -1. */
static long long number(const char *s) {
  if (!*s || strlen(s) > 18) return -1;
  long long n = 0;
  for (; *s; s++) {
    if (*s < '0' || *s > '9') return -1;
    n = n * 10 + (*s - '0');
  }
  return n;
}

static void close_from(int lo) {
  if (syscall(SYS_close_range, (unsigned)lo, ~0U, 0) == 0) return;
  long max = sysconf(_SC_OPEN_MAX);
  if (max < 0 || max > 65536) max = 65536;
  for (int fd = lo; fd < max; fd++) close(fd);
}

static int kept(int fd) {
  for (int i = 0; i < nkeep; i++)
    if (keep[i] == fd) return 1;
  return 0;
}

/* Closes the descriptors passed down (all of ONMEMOS_KEEP_FDS), but `except`. */
static void close_kept(int except) {
  for (int i = 0; i < nkeep; i++)
    if (keep[i] != except) close(keep[i]);
}

static int write_all(int fd, const char *buf, size_t len) {
  while (len > 0) {
    ssize_t w = write(fd, buf, len);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    buf += w;
    len -= (size_t)w;
  }
  return 0;
}

static int write_file(const char *path, const char *text) {
  int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  int r = write_all(fd, text, strlen(text));
  int saved = errno;
  close(fd);
  errno = saved;
  return r;
}

/* Reads one line (up to '\n') from `fd`, a byte at a time (nothing past it is consumed); 0 at EOF first. */
static int read_line(int fd) {
  for (int i = 0; i < 64; i++) {
    char c;
    ssize_t r = read(fd, &c, 1);
    if (r < 0 && errno == EINTR) {
      i--;
      continue;
    }
    if (r <= 0) return 0;
    if (c == '\n') return 1;
  }
  return 0;
}

static void stdin_null(void) {
  int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd < 0 || dup2(fd, 0) < 0) die("/dev/null");
  close(fd);
}

/* What a child undoes of the launcher's signal set-up before it execs. */
static void child_signals(void) {
  sigset_t none;
  sigemptyset(&none);
  signal(SIGPIPE, SIG_DFL);
  sigprocmask(SIG_SETMASK, &none, NULL);
}

static void join_cgroup(void) {
  char files[4096];
  if (snprintf(files, sizeof files, "%s", env("ONMEMOS_CGROUP_JOIN")) >= (int)sizeof files) {
    errno = ENAMETOOLONG;
    die("ONMEMOS_CGROUP_JOIN");
  }
  char *save = NULL;
  for (char *f = strtok_r(files, " ", &save); f; f = strtok_r(NULL, " ", &save))
    if (write_file(f, "0\n") < 0) die(f);
}

/* To the session's host uid, with no supplementary groups (as root; rootless runs as that uid already). */
static void drop(void) {
  if (!root) return;
  if (setgroups(0, NULL) < 0 || setresgid(uid, uid, uid) < 0 || setresuid(uid, uid, uid) < 0) die("setresuid");
}

static void mkdir_p(const char *path) {
  char p[4096];
  snprintf(p, sizeof p, "%s", path);
  for (char *s = p + 1; *s; s++) {
    if (*s != '/') continue;
    *s = 0;
    if (mkdir(p, 0755) < 0 && errno != EEXIST) die(p);
    *s = '/';
  }
  if (mkdir(p, 0755) < 0 && errno != EEXIST) die(p);
}

/* One entry of ONMEMOS_DATA_DIRS ("name:octal-mode", disk.ts DATA_DIRS): cuts it to the name, returns the mode. */
static mode_t data_dir(char *entry) {
  char *colon = strchr(entry, ':'), *end = NULL;
  if (!colon || colon == entry || strchr(entry, '/')) {
    errno = EINVAL;
    die("ONMEMOS_DATA_DIRS");
  }
  *colon = 0;
  long mode = strtol(colon + 1, &end, 8);
  if (*end || end == colon + 1 || mode < 0 || mode > 07777) {
    errno = EINVAL;
    die("ONMEMOS_DATA_DIRS");
  }
  return (mode_t)mode;
}

/* Each host directory ONMEMOS_BIND_i bound at ONMEMOS_BINDS_DIR/i, in this mount namespace. */
static void stage_binds(void) {
  long long n = number(env("ONMEMOS_BINDS"));
  if (n > 0 && *env("ONMEMOS_BINDS_DIR") != '/') {
    errno = EINVAL;
    die("ONMEMOS_BINDS_DIR");
  }
  for (long long i = 0; i < n && i < 256; i++) {
    char name[64], target[4096];
    snprintf(name, sizeof name, "ONMEMOS_BIND_%lld", i);
    snprintf(target, sizeof target, "%s/%lld", env("ONMEMOS_BINDS_DIR"), i);
    mkdir_p(target);
    if (mount(env(name), target, NULL, MS_BIND, NULL) < 0) die(target);
  }
}

/* The image on a free loop device (detached when its mount goes), mounted nosuid, nodev at `target`. */
static void loop_mount(const char *image, const char *target) {
  int ctl = open("/dev/loop-control", O_RDWR | O_CLOEXEC);
  if (ctl < 0) die("/dev/loop-control");
  int img = open(image, O_RDWR | O_CLOEXEC);
  if (img < 0) die(image);
  for (int tries = 0; tries < 100; tries++) {
    int n = ioctl(ctl, LOOP_CTL_GET_FREE);
    if (n < 0) die("LOOP_CTL_GET_FREE");
    char dev[64];
    snprintf(dev, sizeof dev, "/dev/loop%d", n);
    int lfd = open(dev, O_RDWR | O_CLOEXEC);
    if (lfd < 0 && errno == ENOENT) {
      /* No devtmpfs here: make the node, as mount(8) would find it. */
      if (mknod(dev, S_IFBLK | 0660, makedev(7, n)) < 0 && errno != EEXIST) die(dev);
      lfd = open(dev, O_RDWR | O_CLOEXEC);
    }
    if (lfd < 0) die(dev);
    struct loop_config config;
    memset(&config, 0, sizeof config);
    config.fd = (unsigned)img;
    config.info.lo_flags = LO_FLAGS_AUTOCLEAR;
    snprintf((char *)config.info.lo_file_name, LO_NAME_SIZE, "%s", image);
    int r = ioctl(lfd, LOOP_CONFIGURE, &config);
    if (r < 0 && (errno == EINVAL || errno == ENOTTY)) {
      /* Before Linux 5.8: the same in two steps. */
      r = ioctl(lfd, LOOP_SET_FD, img);
      if (r == 0 && ioctl(lfd, LOOP_SET_STATUS64, &config.info) < 0) {
        int saved = errno;
        ioctl(lfd, LOOP_CLR_FD, 0);
        errno = saved;
        r = -1;
      }
    }
    if (r < 0 && errno == EBUSY) {
      /* Taken by another process between the two calls: the next free one. */
      close(lfd);
      continue;
    }
    if (r < 0) die("loop device");
    if (mount(dev, target, "ext4", MS_NOSUID | MS_NODEV, NULL) < 0) die("mount of the session's disk");
    close(lfd);
    close(img);
    close(ctl);
    return;
  }
  errno = EBUSY;
  die("loop device");
}

/* Runs argv[0] with argv and waits: its exit status, or -1. */
static int run(char **argv) {
  pid_t pid = fork();
  if (pid < 0) die("fork");
  if (pid == 0) {
    execv(argv[0], argv);
    die(argv[0]);
  }
  int status;
  while (waitpid(pid, &status, 0) < 0)
    if (errno != EINTR) die("waitpid");
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* At most this much of a cached filesystem is copied (an empty one has a few hundred KiB). */
#define CACHE_DATA_MAX (64LL << 20)

/*
 * Copies the data of the sparse file `from` into `to` (a sparse file of the same size), hole by hole, so `to`
 * stays sparse. 0 if done; with nothing written, NO_CACHE where `from` is missing or not one of our own (owned by
 * this uid, no one else may write it, the same size), NOT_SPARSE where it shows more data than an empty
 * filesystem has (a filesystem that does not report holes: a copy would write every byte).
 */
#define NO_CACHE (-1)
#define NOT_SPARSE (-2)
static int copy_sparse(const char *from, const char *to) {
  int in = open(from, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
  if (in < 0) return NO_CACHE;
  int out = open(to, O_WRONLY | O_CLOEXEC | O_NOFOLLOW);
  if (out < 0) die(to);
  struct stat a, b;
  if (fstat(in, &a) < 0 || fstat(out, &b) < 0) die("fstat");
  if (!S_ISREG(a.st_mode) || a.st_uid != geteuid() || (a.st_mode & 022) != 0 || a.st_size != b.st_size) {
    close(in);
    close(out);
    return NO_CACHE;
  }
  /* Twice over its data (SEEK_DATA, SEEK_HOLE): first to count it, then to copy it. */
  long long total = 0;
  for (int copy = 0; copy < 2; copy++) {
    for (off_t pos = 0; pos < a.st_size;) {
      off_t data = lseek(in, pos, SEEK_DATA);
      if (data < 0 && errno == ENXIO) break;
      off_t hole = data < 0 ? -1 : lseek(in, data, SEEK_HOLE);
      if ((data < 0 || hole < 0) && copy) die(from);
      if (data < 0 || hole < 0) {
        total = CACHE_DATA_MAX + 1; /* no holes to go by */
        break;
      }
      if (!copy) total += hole - data;
      for (off_t at = data; copy && at < hole;) {
        char buf[65536];
        size_t want = (size_t)(hole - at < (off_t)sizeof buf ? hole - at : (off_t)sizeof buf);
        ssize_t r = pread(in, buf, want, at);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) die(from);
        if (pwrite(out, buf, (size_t)r, at) != r) die(to);
        at += r;
      }
      pos = hole;
    }
    if (total > CACHE_DATA_MAX) break;
  }
  int ok = total <= CACHE_DATA_MAX;
  close(in);
  close(out);
  return ok ? 0 : NOT_SPARSE;
}

/*
 * The disk (as root): the empty filesystem copied from the disk cache (ONMEMOS_DISK_CACHE; made first with mkfs
 * at ONMEMOS_DISK_CACHE_NEW and renamed into place when there is none), the loop mount, the data directories
 * (ONMEMOS_DATA_DIRS) given to the session's uid with the filesystem's root, and the binds. Exits 0 once all of it
 * is mounted.
 */
static void disk_child(char **mkfs_argv, int k, const char *data) {
  child_signals();
  stdin_null();
  close_kept(-1);
  const char *image = env("ONMEMOS_IMAGE"), *cache = env("ONMEMOS_DISK_CACHE"), *fresh = env("ONMEMOS_DISK_CACHE_NEW");
  int copied = copy_sparse(cache, image);
  if (copied == NO_CACHE) {
    struct stat st;
    if (stat(image, &st) < 0) die(image);
    int fd = open(fresh, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0 || ftruncate(fd, st.st_size) < 0) die(fresh);
    close(fd);
    if (run(mkfs_argv) != 0) {
      unlink(fresh);
      say("mkfs.ext4 failed");
      _exit(FAIL);
    }
    if (rename(fresh, cache) < 0) die(cache);
    copied = copy_sparse(cache, image);
  }
  if (copied != 0) {
    /* A host filesystem that does not report holes: mkfs on the image itself. */
    mkfs_argv[k - 1] = (char *)image;
    if (run(mkfs_argv) != 0) {
      say("mkfs.ext4 failed");
      _exit(FAIL);
    }
  }
  loop_mount(image, data);
  /* ONMEMOS_DATA_DIRS: "name:octal-mode ...", each owned by the session's uid, as the filesystem's root. */
  char dirs[512], dir[4096];
  snprintf(dirs, sizeof dirs, "%s", env("ONMEMOS_DATA_DIRS"));
  char *save = NULL;
  for (char *t = strtok_r(dirs, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
    mode_t mode = data_dir(t);
    snprintf(dir, sizeof dir, "%s/%s", data, t);
    if (mkdir(dir, 0700) < 0 || chmod(dir, mode) < 0 || chown(dir, uid, uid) < 0) die(dir);
  }
  if (chown(data, uid, uid) < 0) die(data);
  stage_binds();
  _exit(0);
}

/* Copies at most ONMEMOS_LOG_BYTES from stdin to stderr (the session log), then ends (writers then get EPIPE). */
static void log_child(int from) {
  if (dup2(from, 0) < 0) _exit(FAIL);
  close_from(3);
  long long left = number(env("ONMEMOS_LOG_BYTES"));
  char buf[16384];
  while (left > 0) {
    ssize_t r = read(0, buf, (size_t)(left < (long long)sizeof buf ? left : (long long)sizeof buf));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    if (write_all(2, buf, (size_t)r) < 0) break;
    left -= r;
  }
  _exit(0);
}

/*
 * The go, from the launcher to the sandbox's first process: one datagram whose bytes name the descriptor each
 * attached one becomes (SCM_RIGHTS, in the same order). The descriptors are opened and made by the launcher.
 */
static void send_data(int sock, const unsigned char *slots, const int *fds, int n) {
  unsigned char none = 0;
  if (scm_send(sock, n > 0 ? (const void *)slots : &none, n > 0 ? (size_t)n : 1, fds, n) < 0) die("the go");
}

/* Takes the go (send_data) and puts each descriptor in its place; EOF or anything malformed ends it. */
static void receive_data(int sock) {
  unsigned char slots[MAX_DATA + 1];
  int fds[MAX_DATA], n = 0;
  ssize_t r = scm_recv(sock, slots, sizeof slots, fds, MAX_DATA, &n, 0);
  if (r == 0) _exit(FAIL);
  if (r < 0 || (n > 0 && n != r) || (n == 0 && !(r == 1 && slots[0] == 0))) {
    if (r >= 0) errno = EPROTO;
    die("the go");
  }
  /* Clear of every slot first: a descriptor that came at one slot's number must not be overwritten by another. */
  for (int i = 0; i < n; i++) {
    int high = fcntl(fds[i], F_DUPFD_CLOEXEC, HIGH_FD);
    if (high < 0) die("fcntl");
    close(fds[i]);
    fds[i] = high;
  }
  for (int i = 0; i < n; i++) {
    if (slots[i] < 3 || slots[i] >= HIGH_FD || kept(slots[i])) {
      errno = EPROTO;
      die("the go");
    }
    if (dup2(fds[i], slots[i]) < 0) die("dup2");
    close(fds[i]);
  }
}

/* What the go brings (see the top, 5): each ONMEMOS_FD_n opened, each ONMEMOS_SOCKET_n bound and listening. */
static int open_data(unsigned char *slots, int *fds) {
  int n = 0;
  int dir = -1;
  for (int slot = 3; slot < HIGH_FD; slot++) {
    char name[32];
    snprintf(name, sizeof name, "ONMEMOS_FD_%d", slot);
    const char *file = getenv(name);
    snprintf(name, sizeof name, "ONMEMOS_SOCKET_%d", slot);
    const char *sock = getenv(name);
    if (!file && !sock) continue;
    if (n >= MAX_DATA || kept(slot)) {
      say("%s: not a descriptor the go can bring", name);
      _exit(FAIL);
    }
    int fd;
    if (file) {
      fd = open(file, O_RDONLY | O_CLOEXEC);
      if (fd < 0) die(file);
    } else {
      /* Bound through the open session directory: its path may be longer than a socket address can be. */
      if (strchr(sock, '/') || !*sock) {
        errno = EINVAL;
        die(name);
      }
      if (dir < 0) {
        dir = open(env("ONMEMOS_SESSION_DIR"), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir < 0) die("the session directory");
      }
      struct sockaddr_un addr = {.sun_family = AF_UNIX};
      if (snprintf(addr.sun_path, sizeof addr.sun_path, "/proc/self/fd/%d/%s", dir, sock) >= (int)sizeof addr.sun_path) {
        errno = ENAMETOOLONG;
        die(sock);
      }
      fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(fd, 128) < 0) die(sock);
    }
    slots[n] = (unsigned char)slot;
    fds[n++] = fd;
  }
  if (dir >= 0) close(dir);
  return n;
}

/* The sandbox's first process (see the top). `ready` says "A"; `go` brings the go and the descriptors. */
static void sandbox_child(int ready, int go, char **bwrap_argv, const char *data) {
  child_signals();
  if (net_ready >= 0) close(net_ready);
  join_cgroup();
  /* As root, a low OOM score where root may lower one (CAP_SYS_RESOURCE): the agent must outlive a command that
     fills the memory limit (each command raises its own score to 500). */
  if (root) write_file("/proc/self/oom_score_adj", "-500\n");
  drop();
  /* A process whose uid changed is not dumpable, and its /proc files are root's: its own uid_map included. */
  if (prctl(PR_SET_DUMPABLE, 1, 0, 0, 0) < 0) die("PR_SET_DUMPABLE");
  uid_t me = geteuid();
  gid_t my_group = getegid();
  int flags = CLONE_NEWUSER | CLONE_NEWNS;
  if (*env("ONMEMOS_UNSHARE_NET")) flags |= CLONE_NEWNET;
  if (unshare(flags) < 0) die("unshare");
  char map[64];
  snprintf(map, sizeof map, "0 %u 1\n", (unsigned)me);
  if (write_file("/proc/self/uid_map", map) < 0) die("uid_map");
  if (write_file("/proc/self/setgroups", "deny\n") < 0) die("setgroups");
  snprintf(map, sizeof map, "0 %u 1\n", (unsigned)my_group);
  if (write_file("/proc/self/gid_map", map) < 0) die("gid_map");
  unsigned long propagation = strcmp(env("ONMEMOS_PROPAGATION"), "slave") == 0 ? MS_SLAVE : MS_PRIVATE;
  if (mount("none", "/", NULL, MS_REC | propagation, NULL) < 0) die("mount propagation");
  long long tmpfs = number(env("ONMEMOS_DATA_TMPFS"));
  if (tmpfs > 0) {
    /* Rootless: a size-bounded tmpfs with the data directories, and the binds (this user's to mount). */
    char options[128], dir[4096];
    snprintf(options, sizeof options, "size=%lld,mode=0755", tmpfs);
    if (mount("onmemos-data", data, "tmpfs", MS_NOSUID | MS_NODEV, options) < 0) die("mount of the data tmpfs");
    char dirs[512];
    snprintf(dirs, sizeof dirs, "%s", env("ONMEMOS_DATA_DIRS"));
    char *save = NULL;
    for (char *t = strtok_r(dirs, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
      mode_t mode = data_dir(t);
      snprintf(dir, sizeof dir, "%s/%s", data, t);
      if (mkdir(dir, 0700) < 0 || chmod(dir, mode) < 0) die(dir);
    }
    stage_binds();
  }
  if (write_all(ready, "A\n", 2) < 0) die("the launcher");
  close(ready);
  receive_data(go);
  close(go);
  int log[2];
  if (pipe2(log, O_CLOEXEC) < 0) die("pipe");
  pid_t logger = fork();
  if (logger < 0) die("fork");
  if (logger == 0) {
    close(log[1]);
    log_child(log[0]);
  }
  close(log[0]);
  if (dup2(log[1], 2) < 0 || dup2(log[1], 1) < 0) die("dup2");
  close(log[1]);
  stdin_null();
  execv(bwrap_argv[0], bwrap_argv);
  die(bwrap_argv[0]);
}

/* slirp4netns for the sandbox `sandbox`, as the session's uid, in its user namespace (see the top). */
static void net_child(pid_t sandbox, pid_t launcher) {
  child_signals();
  stdin_null();
  close_kept(net_ready);
  join_cgroup();
  drop();
  /* After the uid change (which clears it); it outlives the entry into a user namespace this uid owns. */
  if (prctl(PR_SET_PDEATHSIG, SIGKILL, 0, 0, 0) < 0) die("PR_SET_PDEATHSIG");
  if (getppid() != launcher) _exit(FAIL);
  char path[64], ready[32];
  snprintf(path, sizeof path, "/proc/%d/ns/user", (int)sandbox);
  int ns = open(path, O_RDONLY | O_CLOEXEC);
  if (ns < 0 || setns(ns, CLONE_NEWUSER) < 0) die("the session's user namespace");
  close(ns);
  snprintf(path, sizeof path, "/proc/%d/ns/net", (int)sandbox);
  snprintf(ready, sizeof ready, "--ready-fd=%d", net_ready);
  const char *slirp = env("ONMEMOS_SLIRP4NETNS");
  char *argv[] = {(char *)slirp, "--configure", "--mtu=65520", "--disable-host-loopback", "--enable-sandbox",
                  "--enable-seccomp", ready, "--netns-type=path", path, "tap0", NULL};
  execv(slirp, argv);
  die(slirp);
}

/* The session's expiry, unix seconds; 0 (expired) when the file is missing or holds anything but a number. */
static long long expiry(void) {
  char buf[32];
  int fd = open(env("ONMEMOS_EXPIRES_FILE"), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return 0;
  ssize_t r = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (r <= 0) return 0;
  buf[r] = 0;
  buf[strcspn(buf, "\n")] = 0;
  long long n = number(buf);
  return n < 0 ? 0 : n;
}

static int move_high(int fd) {
  int high = fcntl(fd, F_DUPFD_CLOEXEC, HIGH_FD);
  if (high < 0) die("fcntl");
  close(fd);
  return high;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    say("usage: onmemos-launcher K MKFS_ARGV[K] BWRAP_ARGS...");
    return FAIL;
  }
  long long k = number(argv[1]);
  if (k < 0 || k > argc - 3) {
    say("bad mkfs argument count");
    return FAIL;
  }
  char **mkfs_argv = calloc((size_t)k + 1, sizeof *mkfs_argv);
  if (!mkfs_argv) die("calloc");
  memcpy(mkfs_argv, argv + 2, (size_t)k * sizeof *argv);
  char **bwrap_argv = argv + 2 + k;

  /* 1. Only the descriptors it is given. */
  char list[256];
  snprintf(list, sizeof list, "%s", env("ONMEMOS_KEEP_FDS"));
  char *save = NULL;
  for (char *t = strtok_r(list, " ", &save); t && nkeep < MAX_KEEP; t = strtok_r(NULL, " ", &save)) {
    long long fd = number(t);
    if (fd >= 3 && fd < HIGH_FD) keep[nkeep++] = (int)fd;
  }
  for (int fd = 3; fd < HIGH_FD; fd++)
    if (!kept(fd)) close(fd);
  close_from(HIGH_FD);
  long long nr = number(env("ONMEMOS_NET_READY_FD"));
  net_ready = nr >= 3 && kept((int)nr) ? (int)nr : -1;
  const char *uid_text = env("ONMEMOS_UID");
  root = *uid_text != 0;
  if (root) {
    long long u = number(uid_text);
    if (u <= 0 || u >= 0xffffffffLL) {
      say("bad ONMEMOS_UID");
      return FAIL;
    }
    uid = (uid_t)u;
  }
  const char *data = env("ONMEMOS_DATA_MOUNT");
  if (*data != '/') {
    say("bad ONMEMOS_DATA_MOUNT");
    return FAIL;
  }
  pid_t self = getpid();
  signal(SIGPIPE, SIG_IGN);
  sigset_t chld;
  sigemptyset(&chld);
  sigaddset(&chld, SIGCHLD);
  sigprocmask(SIG_BLOCK, &chld, NULL);

  /* 2. As root: its own mount namespace, shared within, and the disk. */
  pid_t disk = 0;
  if (root) {
    if (unshare(CLONE_NEWNS) < 0) die("unshare");
    if (mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 || mount("none", "/", NULL, MS_REC | MS_SHARED, NULL) < 0)
      die("mount propagation");
    if (*env("ONMEMOS_IMAGE")) {
      if (k == 0) {
        say("a disk image needs mkfs' argv");
        return FAIL;
      }
      disk = fork();
      if (disk < 0) die("fork");
      if (disk == 0) disk_child(mkfs_argv, (int)k, data);
    }
  }

  if (*env("ONMEMOS_TUN_NODE")) {
    if (mount("onmemos-tun", "/dev/net", "tmpfs", 0, "size=4k,mode=0755") < 0) die("mount of /dev/net");
    if (mknod("/dev/net/tun", S_IFCHR | 0666, makedev(10, 200)) < 0 || chmod("/dev/net/tun", 0666) < 0)
      die("/dev/net/tun");
  }

  /* 3. The sandbox's first process. */
  int to_launcher[2], to_sandbox[2];
  if (pipe2(to_launcher, O_CLOEXEC) < 0 || socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, to_sandbox) < 0)
    die("pipe");
  for (int i = 0; i < 2; i++) {
    to_launcher[i] = move_high(to_launcher[i]);
    to_sandbox[i] = move_high(to_sandbox[i]);
  }
  pid_t sandbox = fork();
  if (sandbox < 0) die("fork");
  if (sandbox == 0) {
    close(to_launcher[0]);
    close(to_sandbox[1]);
    sandbox_child(to_launcher[1], to_sandbox[0], bwrap_argv, data);
  }
  close(to_launcher[1]);
  close(to_sandbox[0]);

  /* 4. "A", and the network. */
  if (!read_line(to_launcher[0])) {
    int status;
    waitpid(sandbox, &status, 0);
    if (disk) kill(disk, SIGKILL);
    return FAIL;
  }
  close(to_launcher[0]);
  pid_t net = 0;
  if (strcmp(env("ONMEMOS_NETWORK"), "outbound") == 0) {
    net = fork();
    if (net < 0) die("fork");
    if (net == 0) {
      close(to_sandbox[1]);
      net_child(sandbox, self);
    }
  }
  close_kept(-1);

  /* 5. The creator's go-ahead, the descriptors, the disk, the go. */
  if (!read_line(0)) {
    kill(sandbox, SIGKILL);
    if (net) kill(net, SIGKILL);
    if (disk) kill(disk, SIGKILL);
    return FAIL;
  }
  stdin_null();
  unsigned char slots[MAX_DATA];
  int fds[MAX_DATA];
  int n = open_data(slots, fds);
  int status;
  int sandbox_ended = 0;
  if (disk) {
    pid_t p;
    while ((p = waitpid(disk, &status, 0)) < 0 && errno == EINTR) {
    }
    if (p < 0 || !WIFEXITED(status) || WEXITSTATUS(status) != 0) {
      kill(sandbox, SIGKILL);
      if (net) kill(net, SIGKILL);
      return FAIL;
    }
  }
  send_data(to_sandbox[1], slots, fds, n);
  for (int i = 0; i < n; i++) close(fds[i]);
  close(to_sandbox[1]);

  /* 6. Until the sandbox ends or the session expires. */
  for (;;) {
    long long exp = expiry();
    long long now = (long long)time(NULL);
    if (now >= exp) break;
    long long wait_s = exp - now;
    struct timespec ts = {.tv_sec = (time_t)(wait_s > 86400 ? 86400 : wait_s), .tv_nsec = 0};
    sigtimedwait(&chld, NULL, &ts);
    pid_t p;
    while ((p = waitpid(-1, &status, WNOHANG)) > 0) {
      if (p == sandbox) sandbox_ended = 1;
      if (p == net) net = 0;
    }
    if (sandbox_ended) break;
  }
  if (!sandbox_ended) kill(sandbox, SIGKILL);
  if (net) kill(net, SIGKILL);
  while (waitpid(-1, &status, 0) > 0 || errno == EINTR) {
  }
  if ((long long)time(NULL) < expiry()) return 0;
  const char *node = env("ONMEMOS_NODE");
  char *rm[] = {(char *)node, (char *)env("ONMEMOS_BIN"), "--local", "rm", "--force", "--", (char *)env("ONMEMOS_SESSION"), NULL};
  child_signals();
  execv(node, rm);
  die(node);
}
