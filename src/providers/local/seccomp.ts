/**
 * The seccomp filter of session processes: a classic-BPF program that bwrap (`--seccomp FD`) installs right
 * before it execs the sandboxed program. It is a deny list in the spirit of Docker's default profile (moby
 * `profiles/seccomp/default.json`) for a container with no capabilities: sessions already run without any, so
 * most of these calls would fail anyway; the filter keeps their kernel code out of reach (defence in depth) and
 * closes what capabilities do not cover (keyrings, io_uring, AF_VSOCK, TIOCSTI, nested namespaces).
 * Everything not named here is allowed. Pure: it builds bytes and does no I/O, so every rule has a unit test.
 */
import { UnavailableError } from '../../errors.js';

export interface SeccompOptions {
  /** process.arch style: 'x64' | 'arm64'. Default: process.arch. Throw UnavailableError (src/errors.ts) for others. */
  arch?: string;
  /** Allow creating nested user namespaces (clone/unshare with CLONE_NEWUSER). Default false. */
  allowUserNamespaces?: boolean;
}

/**
 * Syscall numbers of exactly the names this filter tests, as [x86_64, aarch64]; null where the arch has no
 * such call. x86_64 from the kernel's syscall_64.tbl (/usr/include/x86_64-linux-gnu/asm/unistd_64.h),
 * aarch64 from the generic table it uses (/usr/include/asm-generic/unistd.h).
 */
const SYSCALLS = {
  // arguments inspected
  ioctl: [16, 29],
  socket: [41, 198],
  personality: [135, 92],
  clone: [56, 220],
  unshare: [272, 97],
  // always denied
  kexec_load: [246, 104],
  kexec_file_load: [320, 294],
  init_module: [175, 105],
  finit_module: [313, 273],
  delete_module: [176, 106],
  reboot: [169, 142],
  swapon: [167, 224],
  swapoff: [168, 225],
  acct: [163, 89],
  settimeofday: [164, 170],
  clock_settime: [227, 112],
  vhangup: [153, 58],
  quotactl: [179, 60],
  quotactl_fd: [443, 443],
  iopl: [172, null],
  ioperm: [173, null],
  syslog: [103, 116],
  perf_event_open: [298, 241],
  bpf: [321, 280],
  lookup_dcookie: [212, 18],
  kcmp: [312, 272],
  add_key: [248, 217],
  keyctl: [250, 219],
  request_key: [249, 218],
  userfaultfd: [323, 282],
  open_by_handle_at: [304, 265],
  fanotify_init: [300, 262],
  pidfd_getfd: [438, 438],
  process_madvise: [440, 440],
  get_mempolicy: [239, 236],
  set_mempolicy: [238, 237],
  set_mempolicy_home_node: [450, 450],
  mbind: [237, 235],
  migrate_pages: [256, 238],
  move_pages: [279, 239],
  uselib: [134, null],
  ustat: [136, null],
  sysfs: [139, null],
  _sysctl: [156, null],
  nfsservctl: [180, 42],
  io_uring_setup: [425, 425],
  io_uring_enter: [426, 426],
  io_uring_register: [427, 427],
  // denied unless allowUserNamespaces
  clone3: [435, 435],
  setns: [308, 268],
  mount: [165, 40],
  umount2: [166, 39],
  pivot_root: [155, 41],
  chroot: [161, 51],
  sethostname: [170, 161],
  setdomainname: [171, 162],
  open_tree: [428, 428],
  move_mount: [429, 429],
  fsopen: [430, 430],
  fsconfig: [431, 431],
  fsmount: [432, 432],
  fspick: [433, 433],
  mount_setattr: [442, 442],
} as const satisfies Record<string, readonly [number | null, number | null]>;
type Syscall = keyof typeof SYSCALLS;

// errno values are the same on x86_64 and aarch64 (asm-generic/errno*.h).
const EPERM = 1;
const ENOSYS = 38;
const EAFNOSUPPORT = 97;

/**
 * Calls denied by number alone, one group per reason. Docker's default profile denies each of them to a
 * container without the capabilities named (sessions have none).
 */
const DENIED: { names: Syscall[]; errno: number }[] = [
  // Loading code into the kernel or replacing it (CAP_SYS_MODULE, CAP_SYS_BOOT).
  { names: ['kexec_load', 'kexec_file_load', 'init_module', 'finit_module', 'delete_module'], errno: EPERM },
  // Machine-wide state no session owns: power, swap, process accounting, the clock, quotas, the console
  // (CAP_SYS_BOOT, CAP_SYS_PACCT, CAP_SYS_TIME, CAP_SYS_ADMIN, CAP_SYS_TTY_CONFIG). adjtimex and clock_adjtime
  // stay allowed, as in Docker: reading the clock's state is harmless, changing it needs CAP_SYS_TIME.
  {
    names: [
      'reboot',
      'swapon',
      'swapoff',
      'acct',
      'settimeofday',
      'clock_settime',
      'quotactl',
      'quotactl_fd',
      'vhangup',
    ],
    errno: EPERM,
  },
  // Raw port I/O (x86 only; CAP_SYS_RAWIO).
  { names: ['iopl', 'ioperm'], errno: EPERM },
  // Kernel introspection: the kernel log, perf, eBPF, dcookies, and kcmp's ordering of kernel pointers
  // (CAP_SYSLOG, CAP_PERFMON, CAP_BPF, CAP_SYS_ADMIN, CAP_SYS_PTRACE). Each is a large, often-exploited surface.
  { names: ['syslog', 'perf_event_open', 'bpf', 'lookup_dcookie', 'kcmp'], errno: EPERM },
  // Keyrings are not namespaced: a session could read or fill keys shared with the host's processes.
  { names: ['add_key', 'keyctl', 'request_key'], errno: EPERM },
  // userfaultfd lets a process stall the kernel mid-copy, the classic way to win a kernel race.
  { names: ['userfaultfd'], errno: EPERM },
  // Opening files by handle bypasses the mount tree (the "shocker" escape; CAP_DAC_READ_SEARCH). Its
  // counterpart name_to_handle_at stays allowed, as in Docker: a handle is useless without this call.
  { names: ['open_by_handle_at'], errno: EPERM },
  // Whole-mount and other processes' watching and memory (CAP_SYS_ADMIN, CAP_SYS_PTRACE in Docker).
  { names: ['fanotify_init', 'pidfd_getfd', 'process_madvise'], errno: EPERM },
  // NUMA placement steers host memory for other workloads (CAP_SYS_NICE). get_mempolicy goes too, so that
  // libnuma reports NUMA unavailable instead of half-working.
  {
    names: ['get_mempolicy', 'set_mempolicy', 'set_mempolicy_home_node', 'mbind', 'migrate_pages', 'move_pages'],
    errno: EPERM,
  },
  // Obsolete interfaces nothing current uses, denied by Docker whatever the capabilities (uselib, ustat and sysfs
  // are still built by many kernels; _sysctl and nfsservctl are gone from current ones).
  { names: ['uselib', 'ustat', 'sysfs', '_sysctl', 'nfsservctl'], errno: EPERM },
  // io_uring: a large share of recent kernel exploits; Docker and containerd deny it. ENOSYS (not EPERM) is
  // what a kernel without io_uring answers, so runtimes such as libuv quietly use their other code paths.
  { names: ['io_uring_setup', 'io_uring_enter', 'io_uring_register'], errno: ENOSYS },
];

/**
 * Calls that only a nested user namespace can use (they need CAP_SYS_ADMIN or CAP_SYS_CHROOT in the
 * namespace): denied unless allowUserNamespaces. Root of a nested user namespace is what tools such as bwrap,
 * rootless podman or Chromium's sandbox use them for, inside namespaces the session owns, so allowing the
 * namespaces without them would be allowing little.
 */
const NAMESPACE_ADMIN: Syscall[] = [
  'setns',
  'mount',
  'umount2',
  'pivot_root',
  'chroot',
  'sethostname',
  'setdomainname',
  'open_tree',
  'move_mount',
  'fsopen',
  'fsconfig',
  'fsmount',
  'fspick',
  'mount_setattr',
];

/**
 * CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET. Without a nested user namespace
 * every other namespace needs CAP_SYS_ADMIN, which sessions lack, so Docker denies them all together.
 */
const CLONE_NEW_MASK = 0x7e020000;
/** unshare also takes CLONE_NEWTIME; in clone's flags that bit belongs to the exit signal. */
const CLONE_NEWTIME = 0x80;
/**
 * ioctl commands (arg1): TIOCSTI pushes input into a terminal, so a process could type commands into the shell
 * that started it (kernels since 6.2 can forbid it, dev.tty.legacy_tiocsti=0, but that is the host's choice);
 * TIOCLINUX does the same to the Linux console and reads its screen.
 */
const DENIED_IOCTLS = [0x5412, 0x541c];
/**
 * socket families (arg0) Docker denies. AF_VSOCK is not network-namespaced: it reaches the services of the
 * hypervisor host when this machine is a VM, whatever the session's network mode. AF_ALG exposes the kernel's
 * crypto API, a recurring source of kernel bugs. They are refused with EAFNOSUPPORT, what a kernel built without
 * them answers, so software probing for them (OpenSSL's afalg engine, say) carries on without.
 */
const AF_ALG = 38;
const AF_VSOCK = 40;
/**
 * The personas Docker allows: PER_LINUX, PER_LINUX32, UNAME26, PER_LINUX32|UNAME26 and the query 0xffffffff.
 * Others, such as ADDR_NO_RANDOMIZE or READ_IMPLIES_EXEC, switch off exploit mitigations for the program
 * exec'd next.
 */
const ALLOWED_PERSONAS = [0x0, 0x8, 0x20000, 0x20008, 0xffffffff];

interface Arch {
  /** AUDIT_ARCH_* value seccomp_data.arch carries for the native syscall ABI. */
  audit: number;
  /** Which column of SYSCALLS. */
  column: 0 | 1;
  /** x86_64 also accepts x32 calls: the native arch value with bit 30 set in the syscall number. */
  x32: boolean;
}

const ARCHES: Record<string, Arch> = {
  x64: { audit: 0xc000003e, column: 0, x32: true },
  arm64: { audit: 0xc00000b7, column: 1, x32: false },
};
const X32_SYSCALL_BIT = 0x40000000;

// Classic BPF opcodes (linux/filter.h, linux/bpf_common.h): only those this generator emits.
const LD_W_ABS = 0x20; // BPF_LD | BPF_W | BPF_ABS
const JEQ_K = 0x15; // BPF_JMP | BPF_JEQ | BPF_K
const JSET_K = 0x45; // BPF_JMP | BPF_JSET | BPF_K
const RET_K = 0x06; // BPF_RET | BPF_K

const RET_KILL_PROCESS = 0x80000000;
const RET_ERRNO = 0x00050000;
const RET_ALLOW = 0x7fff0000;

/**
 * Offsets in struct seccomp_data: int nr; u32 arch; u64 instruction_pointer; u64 args[6]. Both arches are
 * little-endian, so an argument's low 32 bits come first. Classic BPF loads 32 bits at a time and the rules
 * below read only the low word: every argument they test is a 32-bit value to the kernel, which ignores the
 * high word (ioctl's cmd, socket's family and personality's persona are ints; clone uses lower_32_bits of its
 * flags) or rejects it (unshare answers EINVAL to any flag above bit 31). Testing the high word as well would
 * be a bypass, not a safeguard: ioctl(fd, TIOCSTI | 1 << 32) is still TIOCSTI to the kernel.
 */
const NR = 0;
const ARCH = 4;
const argLow = (i: number) => 16 + 8 * i;

type Label = string;
/** One instruction; jt/jf are labels (resolved by assemble) or undefined for "the next instruction". */
interface Insn {
  code: number;
  k: number;
  jt?: Label;
  jf?: Label;
}
type Item = Insn | { label: Label };

const stmt = (code: number, k: number): Insn => ({ code, k: k >>> 0 });
const jump = (code: number, k: number, jt?: Label, jf?: Label): Insn => ({ code, k: k >>> 0, jt, jf });
const ret = (k: number): Insn => stmt(RET_K, k);
const errno = (e: number): Insn => ret(RET_ERRNO | e);
const load = (offset: number): Insn => stmt(LD_W_ABS, offset);

/**
 * Lays the items out and turns labels into forward offsets. Classic BPF only jumps forward, by at most 255
 * (jt and jf are u8): the program is built from short blocks whose jumps stay inside them, and this checks it.
 */
function assemble(items: Item[]): Buffer {
  const at = new Map<Label, number>();
  const insns: Insn[] = [];
  for (const item of items) {
    if ('label' in item) {
      if (at.has(item.label)) throw new Error(`seccomp: label ${item.label} defined twice`);
      at.set(item.label, insns.length);
    } else insns.push(item);
  }
  const out = Buffer.alloc(insns.length * 8);
  insns.forEach((insn, i) => {
    const offset = (label: Label | undefined): number => {
      if (label === undefined) return 0;
      const target = at.get(label);
      if (target === undefined) throw new Error(`seccomp: undefined label ${label}`);
      const d = target - (i + 1);
      if (d < 0 || d > 255) throw new Error(`seccomp: jump to ${label} out of range (${d})`);
      return d;
    };
    out.writeUInt16LE(insn.code, i * 8);
    out.writeUInt8(offset(insn.jt), i * 8 + 2);
    out.writeUInt8(offset(insn.jf), i * 8 + 3);
    out.writeUInt32LE(insn.k, i * 8 + 4);
  });
  return out;
}

/** Builds the program block by block; every block leaves the syscall number in A or returns. */
class Program {
  private readonly items: Item[] = [];
  private labels = 0;
  constructor(private readonly arch: Arch) {}

  label(): Label {
    return `L${this.labels++}`;
  }

  emit(...items: Item[]): void {
    this.items.push(...items);
  }

  nr(name: Syscall): number | null {
    return SYSCALLS[name][this.arch.column];
  }

  /** if (nr is one of names) return action. */
  denyNumbers(names: Syscall[], action: Insn): void {
    const nrs = names.map((n) => this.nr(n)).filter((n) => n !== null);
    if (nrs.length === 0) return;
    const hit = this.label();
    const miss = this.label();
    // The last comparison jumps over the return when it fails too.
    this.emit(...nrs.map((nr, i) => jump(JEQ_K, nr, hit, i === nrs.length - 1 ? miss : undefined)));
    this.emit({ label: hit }, action, { label: miss });
  }

  /**
   * if (nr == name) { body }, where body loads what it needs and must end in a return (A no longer holds the
   * syscall number after it).
   */
  onSyscall(name: Syscall, body: Item[]): void {
    const nr = this.nr(name);
    if (nr === null) return;
    const last = body[body.length - 1];
    if (!last || 'label' in last || last.code !== RET_K) {
      throw new Error(`seccomp: the ${name} block does not end in a return`);
    }
    const skip = this.label();
    this.emit(jump(JEQ_K, nr, undefined, skip), ...body, { label: skip });
  }

  /**
   * Loads the low word of argument i; if it passes any of the tests (op with each value) → then, else
   * otherwise.
   */
  argTest(i: number, op: number, values: number[], then: Insn, otherwise: Insn): Item[] {
    const hit = this.label();
    return [load(argLow(i)), ...values.map((v) => jump(op, v, hit)), otherwise, { label: hit }, then];
  }

  assemble(): Buffer {
    return assemble(this.items);
  }
}

export function seccompFilter(opts: SeccompOptions = {}): Buffer {
  const archName = opts.arch ?? process.arch;
  const arch = ARCHES[archName];
  if (!arch) {
    throw new UnavailableError(`no seccomp filter for the ${archName} architecture`, {
      hint: 'sessions can be filtered on x64 and arm64',
    });
  }
  const userNs = opts.allowUserNamespaces === true;
  // A linear list of comparisons costs ordinary calls nothing: when the filter is installed, the kernel (5.11+)
  // works out which syscall numbers it allows whatever the arguments, and skips running it for those.
  const p = new Program(arch);
  const archOk = p.label();
  const native = p.label();

  // Another syscall ABI (i386 through int 0x80, x32, arm32) means other numbers for the same calls: a deny list
  // keyed on native numbers would not hold for it. Docker filters those ABIs too; sessions need none of them, so
  // they are refused outright. The process is killed rather than answered ENOSYS: a program whose every call
  // fails would run on confused, while SIGSYS ("Bad system call") says at once what happened.
  p.emit(load(ARCH), jump(JEQ_K, arch.audit, archOk), ret(RET_KILL_PROCESS), { label: archOk }, load(NR));
  if (arch.x32) {
    // nr -1 carries the bit but is no x32 call: the kernel answers it ENOSYS, as libseccomp leaves it to.
    p.emit(jump(JSET_K, X32_SYSCALL_BIT, undefined, native), jump(JEQ_K, 0xffffffff, native));
    p.emit(ret(RET_KILL_PROCESS));
  }
  p.emit({ label: native });

  for (const group of DENIED) p.denyNumbers(group.names, errno(group.errno));
  if (!userNs) {
    p.denyNumbers(NAMESPACE_ADMIN, errno(EPERM));
    // clone3's flags sit in a struct BPF cannot read. ENOSYS makes glibc (2.34+) fall back to clone, whose
    // flags it can read.
    p.denyNumbers(['clone3'], errno(ENOSYS));
  }
  // ptrace, process_vm_readv and process_vm_writev stay allowed, as in Docker on kernels since 4.8 (from which
  // seccomp rules are rechecked after a tracer changes a call; Node 20 needs a newer kernel anyway): strace and
  // gdb are useful in a session, and the kernel limits them to the session's own processes (same uid, no
  // capabilities, own pid namespace).

  // The argument checks come last: each loads an argument over the syscall number, so each ends in a return.
  // Every jump stays inside its block, so the program can grow without nearing classic BPF's 255 limit.
  p.onSyscall('ioctl', p.argTest(1, JEQ_K, DENIED_IOCTLS, errno(EPERM), ret(RET_ALLOW)));
  p.onSyscall('socket', p.argTest(0, JEQ_K, [AF_ALG, AF_VSOCK], errno(EAFNOSUPPORT), ret(RET_ALLOW)));
  p.onSyscall('personality', p.argTest(0, JEQ_K, ALLOWED_PERSONAS, ret(RET_ALLOW), errno(EPERM)));
  if (!userNs) {
    p.onSyscall('clone', p.argTest(0, JSET_K, [CLONE_NEW_MASK], errno(EPERM), ret(RET_ALLOW)));
    p.onSyscall('unshare', p.argTest(0, JSET_K, [CLONE_NEW_MASK | CLONE_NEWTIME], errno(EPERM), ret(RET_ALLOW)));
  }
  p.emit(ret(RET_ALLOW));
  return p.assemble();
}
