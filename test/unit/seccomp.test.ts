/**
 * The seccomp program, run by a small classic-BPF interpreter over hand-made seccomp_data. The syscall numbers
 * here are transcribed separately from the module's table (x86_64 unistd_64.h, asm-generic unistd.h), so a
 * wrong number there fails here.
 */
import { describe, expect, it } from 'vitest';
import { UnavailableError } from '../../src/errors.js';
import { seccompFilter } from '../../src/providers/local/seccomp.js';

const ALLOW = 0x7fff0000;
const KILL_PROCESS = 0x80000000;
const EPERM = 0x50000 | 1;
const ENOSYS = 0x50000 | 38;
const EAFNOSUPPORT = 0x50000 | 97;

const AUDIT_ARCH = { x64: 0xc000003e, arm64: 0xc00000b7, i386: 0x40000003, arm: 0x40000028 };

type Name =
  | 'read'
  | 'write'
  | 'openat'
  | 'close'
  | 'mmap'
  | 'futex'
  | 'execve'
  | 'wait4'
  | 'clone'
  | 'clone3'
  | 'unshare'
  | 'setns'
  | 'ioctl'
  | 'socket'
  | 'personality'
  | 'ptrace'
  | 'process_vm_readv'
  | 'adjtimex'
  | 'name_to_handle_at'
  | 'keyctl'
  | 'bpf'
  | 'mount'
  | 'init_module'
  | 'io_uring_setup'
  | 'userfaultfd'
  | 'perf_event_open'
  | 'open_by_handle_at'
  | 'iopl';

const NR: Record<'x64' | 'arm64', Record<Name, number | undefined>> = {
  x64: {
    read: 0,
    write: 1,
    openat: 257,
    close: 3,
    mmap: 9,
    futex: 202,
    execve: 59,
    wait4: 61,
    clone: 56,
    clone3: 435,
    unshare: 272,
    setns: 308,
    ioctl: 16,
    socket: 41,
    personality: 135,
    ptrace: 101,
    process_vm_readv: 310,
    adjtimex: 159,
    name_to_handle_at: 303,
    keyctl: 250,
    bpf: 321,
    mount: 165,
    init_module: 175,
    io_uring_setup: 425,
    userfaultfd: 323,
    perf_event_open: 298,
    open_by_handle_at: 304,
    iopl: 172,
  },
  arm64: {
    read: 63,
    write: 64,
    openat: 56,
    close: 57,
    mmap: 222,
    futex: 98,
    execve: 221,
    wait4: 260,
    clone: 220,
    clone3: 435,
    unshare: 97,
    setns: 268,
    ioctl: 29,
    socket: 198,
    personality: 92,
    ptrace: 117,
    process_vm_readv: 270,
    adjtimex: 171,
    name_to_handle_at: 264,
    keyctl: 219,
    bpf: 280,
    mount: 40,
    init_module: 105,
    io_uring_setup: 425,
    userfaultfd: 282,
    perf_event_open: 241,
    open_by_handle_at: 265,
    iopl: undefined,
  },
};

// Classic BPF opcodes the generator may emit; anything else fails the interpreter.
const LD_W_ABS = 0x20;
const JEQ_K = 0x15;
const JSET_K = 0x45;
const RET_K = 0x06;

interface Insn {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

function decode(prog: Buffer): Insn[] {
  const out: Insn[] = [];
  for (let i = 0; i < prog.length; i += 8) {
    out.push({ code: prog.readUInt16LE(i), jt: prog[i + 2]!, jf: prog[i + 3]!, k: prog.readUInt32LE(i + 4) });
  }
  return out;
}

/** struct seccomp_data, little-endian: int nr; u32 arch; u64 instruction_pointer; u64 args[6]. */
function seccompData(nr: number, arch: number, args: bigint[] = []): Buffer {
  const d = Buffer.alloc(64);
  d.writeUInt32LE(nr >>> 0, 0);
  d.writeUInt32LE(arch >>> 0, 4);
  d.writeBigUInt64LE(0x400000n, 8);
  for (const [i, a] of args.entries()) d.writeBigUInt64LE(a, 16 + 8 * i);
  return d;
}

/** Runs the program as the kernel would and returns its 32-bit verdict. */
function run(prog: Buffer, data: Buffer): number {
  const insns = decode(prog);
  let a = 0;
  let pc = 0;
  for (let steps = 0; steps <= insns.length; steps++) {
    const insn = insns[pc];
    if (!insn) throw new Error(`fell off the program at ${pc}`);
    pc++;
    switch (insn.code) {
      case LD_W_ABS:
        if (insn.k % 4 !== 0 || insn.k + 4 > data.length) throw new Error(`bad load offset ${insn.k}`);
        a = data.readUInt32LE(insn.k);
        break;
      case JEQ_K:
        pc += a === insn.k ? insn.jt : insn.jf;
        break;
      case JSET_K:
        pc += (a & insn.k) !== 0 ? insn.jt : insn.jf;
        break;
      case RET_K:
        return insn.k;
      default:
        throw new Error(`unexpected opcode 0x${insn.code.toString(16)} at ${pc - 1}`);
    }
  }
  throw new Error('no return (a loop?)');
}

const ARCHES = ['x64', 'arm64'] as const;

describe.each(ARCHES)('seccompFilter on %s', (arch) => {
  const strict = seccompFilter({ arch });
  const userNs = seccompFilter({ arch, allowUserNamespaces: true });
  const native = AUDIT_ARCH[arch];
  const call = (prog: Buffer, name: Name, ...args: number[]) => {
    const nr = NR[arch][name];
    if (nr === undefined) throw new Error(`${name} does not exist on ${arch}`);
    return run(prog, seccompData(nr, native, args.map(BigInt)));
  };

  it('is a well-formed program: 8-byte instructions, jumps inside it, a return at the end', () => {
    for (const prog of [strict, userNs]) {
      expect(prog.length % 8).toBe(0);
      const insns = decode(prog);
      expect(insns.length).toBeGreaterThan(0);
      expect(insns.length).toBeLessThanOrEqual(4096); // BPF_MAXINSNS
      insns.forEach((insn, i) => {
        expect([LD_W_ABS, JEQ_K, JSET_K, RET_K]).toContain(insn.code);
        if (insn.code === JEQ_K || insn.code === JSET_K) {
          expect(i + 1 + insn.jt).toBeLessThan(insns.length);
          expect(i + 1 + insn.jf).toBeLessThan(insns.length);
        } else expect([insn.jt, insn.jf]).toEqual([0, 0]);
      });
      expect(insns.at(-1)?.code).toBe(RET_K);
    }
  });

  it('defaults to the arch of this process and refuses others', () => {
    if (process.arch === arch) expect(seccompFilter().equals(strict)).toBe(true);
    expect(() => seccompFilter({ arch: 'ia32' })).toThrow(UnavailableError);
  });

  it('answers every syscall number with one of its verdicts (no path falls off or loops)', () => {
    for (const prog of [strict, userNs]) {
      for (let nr = 0; nr < 600; nr++) {
        expect([ALLOW, EPERM, ENOSYS]).toContain(run(prog, seccompData(nr, native)));
      }
    }
  });

  it('allows what ordinary programs do', () => {
    for (const name of ['read', 'write', 'openat', 'close', 'mmap', 'futex', 'execve', 'wait4'] as const) {
      expect(call(strict, name)).toBe(ALLOW);
    }
    expect(call(strict, 'clone', 0x01200011)).toBe(ALLOW); // fork: CHILD_SETTID | CHILD_CLEARTID | SIGCHLD
    expect(call(strict, 'clone', 0x003d0f00)).toBe(ALLOW); // pthread_create's flags when clone3 is refused
    expect(call(strict, 'unshare', 0x400)).toBe(ALLOW); // CLONE_FILES
    expect(call(strict, 'socket', 2, 1, 0)).toBe(ALLOW); // AF_INET
    expect(call(strict, 'socket', 1, 1, 0)).toBe(ALLOW); // AF_UNIX
    expect(call(strict, 'ioctl', 0, 0x5401)).toBe(ALLOW); // TCGETS
    for (const persona of [0, 0x8, 0x20000, 0x20008, 0xffffffff]) {
      expect(call(strict, 'personality', persona)).toBe(ALLOW);
    }
    // Debuggers in a session, and the read-only halves Docker allows.
    expect(call(strict, 'ptrace')).toBe(ALLOW);
    expect(call(strict, 'process_vm_readv')).toBe(ALLOW);
    expect(call(strict, 'adjtimex')).toBe(ALLOW);
    expect(call(strict, 'name_to_handle_at')).toBe(ALLOW);
  });

  it('denies the dangerous calls with EPERM, io_uring with ENOSYS', () => {
    for (const name of ['keyctl', 'bpf', 'mount', 'init_module', 'userfaultfd', 'perf_event_open'] as const) {
      expect(call(strict, name), name).toBe(EPERM);
      if (name !== 'mount') expect(call(userNs, name), name).toBe(EPERM);
    }
    expect(call(strict, 'open_by_handle_at')).toBe(EPERM);
    if (arch === 'x64') expect(call(strict, 'iopl')).toBe(EPERM);
    expect(call(strict, 'io_uring_setup')).toBe(ENOSYS);
    expect(call(userNs, 'io_uring_setup')).toBe(ENOSYS);
  });

  it('allows only the personas Docker allows', () => {
    expect(call(strict, 'personality', 0x0040000)).toBe(EPERM); // ADDR_NO_RANDOMIZE
    expect(call(strict, 'personality', 0x0400000)).toBe(EPERM); // READ_IMPLIES_EXEC
  });

  it('refuses new namespaces unless allowUserNamespaces', () => {
    const NEWUSER = 0x10000000;
    const NEWNS = 0x20000;
    expect(call(strict, 'clone', NEWUSER | 0x11)).toBe(EPERM);
    expect(call(userNs, 'clone', NEWUSER | 0x11)).toBe(ALLOW);
    expect(call(strict, 'unshare', NEWUSER | NEWNS)).toBe(EPERM);
    expect(call(userNs, 'unshare', NEWUSER | NEWNS)).toBe(ALLOW);
    // Every namespace flag on its own, and CLONE_NEWTIME for unshare.
    for (const bit of [0x20000, 0x02000000, 0x04000000, 0x08000000, 0x10000000, 0x20000000, 0x40000000]) {
      expect(call(strict, 'clone', bit | 0x11), bit.toString(16)).toBe(EPERM);
      expect(call(strict, 'unshare', bit), bit.toString(16)).toBe(EPERM);
    }
    expect(call(strict, 'unshare', 0x80)).toBe(EPERM);
    expect(call(strict, 'clone', 0x80 | 0x11)).toBe(ALLOW); // in clone, 0x80 is part of the exit signal
    expect(call(strict, 'setns')).toBe(EPERM);
    expect(call(userNs, 'setns')).toBe(ALLOW);
    // What a nested user namespace is for: mounting in the namespaces it owns.
    expect(call(userNs, 'mount')).toBe(ALLOW);
  });

  it('answers clone3 ENOSYS (its flags are out of BPF reach) unless allowUserNamespaces', () => {
    expect(call(strict, 'clone3')).toBe(ENOSYS);
    expect(call(userNs, 'clone3')).toBe(ALLOW);
  });

  it('refuses terminal input injection, whatever the high word of the command', () => {
    expect(call(strict, 'ioctl', 0, 0x5412)).toBe(EPERM); // TIOCSTI
    expect(call(strict, 'ioctl', 0, 0x541c)).toBe(EPERM); // TIOCLINUX
    // The kernel takes cmd as an unsigned int: 1 << 32 | TIOCSTI is still TIOCSTI.
    const nr = NR[arch].ioctl!;
    expect(run(strict, seccompData(nr, native, [0n, (1n << 32n) | 0x5412n]))).toBe(EPERM);
    expect(run(userNs, seccompData(nr, native, [0n, 0x5412n]))).toBe(EPERM);
  });

  it('refuses AF_VSOCK and AF_ALG sockets as a kernel without them would', () => {
    expect(call(strict, 'socket', 40, 1, 0)).toBe(EAFNOSUPPORT);
    expect(call(strict, 'socket', 38, 5, 0)).toBe(EAFNOSUPPORT);
    expect(run(strict, seccompData(NR[arch].socket!, native, [(1n << 32n) | 40n]))).toBe(EAFNOSUPPORT);
  });

  it('kills processes using another syscall ABI', () => {
    const foreign = arch === 'x64' ? AUDIT_ARCH.i386 : AUDIT_ARCH.arm;
    const other = arch === 'x64' ? AUDIT_ARCH.arm64 : AUDIT_ARCH.x64;
    for (const prog of [strict, userNs]) {
      expect(run(prog, seccompData(1, foreign))).toBe(KILL_PROCESS);
      expect(run(prog, seccompData(NR[arch].write!, other))).toBe(KILL_PROCESS);
    }
  });
});

describe('x32 on x86_64', () => {
  const prog = seccompFilter({ arch: 'x64' });
  it('kills x32 calls (the native arch with bit 30 in the number)', () => {
    expect(run(prog, seccompData(0x40000000 | 1, AUDIT_ARCH.x64))).toBe(KILL_PROCESS);
    expect(run(prog, seccompData(0x40000000 | 250, AUDIT_ARCH.x64))).toBe(KILL_PROCESS);
  });
  it('leaves syscall -1 to the kernel (ENOSYS), as libseccomp does', () => {
    expect(run(prog, seccompData(-1, AUDIT_ARCH.x64))).toBe(ALLOW);
  });
  it('has no x32 rule on arm64, where bit 30 means nothing special', () => {
    expect(run(seccompFilter({ arch: 'arm64' }), seccompData(0x40000000 | 1, AUDIT_ARCH.arm64))).toBe(ALLOW);
  });
});
