/**
 * Whether a background process keeps running while a session is idle (no exec or shell open): one exec starts a
 * heartbeat (the session's clock in ms, a line every 100 ms, for at most 30 s or until told to stop), nothing runs
 * for `idleMs`, and the next exec reads the heartbeats and the time. A heartbeat that runs on leaves gaps of about
 * 100 ms; one killed with its exec, or frozen between requests (Cloud Run's request-based CPU), leaves a gap of at
 * least `idleMs`, or no beat before the idle time at all. Only the session's own clock is read.
 */
export type Run = (argv: string[]) => Promise<{ code: number | null; stdout: Buffer | string }>;

export interface Heartbeat {
  /** The longest time between two beats, or between the last beat and the second exec. */
  maxGapMs: number;
  /** From the first beat to the second exec: at least the idle time when the heartbeat began before it. */
  spanMs: number;
  beats: number;
}

export async function heartbeatAcrossIdle(run: Run, idleMs = 2_500): Promise<Heartbeat> {
  // In the working directory (the workspace): it goes with the session.
  const file = `.onmemos-heartbeat-${Math.random().toString(36).slice(2, 10)}`;
  const loop = `i=0; while [ $i -lt 300 ] && [ ! -e ${file}.stop ]; do date +%s%3N >> ${file}; i=$((i+1)); sleep 0.1; done`;
  // "started" once the first beat is written: on a loaded machine the loop may not have run yet when the exec
  // returns, and a backend that freezes an idle session would then show no gap at all.
  const wait = `n=0; while [ ! -s ${file} ] && [ $n -lt 500 ]; do sleep 0.01; n=$((n+1)); done`;
  const started = await run(['sh', '-c', `(${loop}) </dev/null >/dev/null 2>&1 & ${wait}; echo started`]);
  if (started.code !== 0 || started.stdout.toString() !== 'started\n') {
    const err = (started as { stderr?: unknown }).stderr;
    throw new Error(`the heartbeat did not start: ${started.code} ${started.stdout.toString()} ${String(err ?? '')}`);
  }
  await new Promise((r) => setTimeout(r, idleMs));
  const read = await run(['sh', '-c', `cat ${file} 2>/dev/null; date +%s%3N; touch ${file}.stop`]);
  const times = read.stdout
    .toString()
    .trim()
    .split('\n')
    .map(Number)
    .filter((n) => Number.isFinite(n) && n > 0);
  const now = times.at(-1) ?? 0;
  let maxGapMs = 0;
  for (let i = 1; i < times.length; i++) maxGapMs = Math.max(maxGapMs, times[i]! - times[i - 1]!);
  return { maxGapMs, spanMs: now - (times[0] ?? now), beats: times.length - 1 };
}
