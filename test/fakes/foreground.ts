/**
 * For the fakes' standalone runners (`npm run fake -- kube|cloudrun`): resolves once the runner should stop —
 * SIGINT or SIGTERM (a second one exits at once, 130), or its parent gone (`npm run` dies of a SIGTERM without
 * passing it on) — saying why on stderr as `{name}: {why}: stopping`.
 */
export function untilStopped(name: string): Promise<void> {
  return new Promise<void>((resolve) => {
    const stop = (why: string) => {
      process.stderr.write(`${name}: ${why}: stopping\n`);
      resolve();
    };
    for (const signal of ['SIGINT', 'SIGTERM'] as const) {
      process.once(signal, () => {
        process.once(signal, () => process.exit(130)); // a second one does not wait
        stop(signal);
      });
    }
    const parent = process.ppid;
    const watch = setInterval(() => {
      if (process.ppid !== parent) {
        clearInterval(watch);
        stop('its parent process ended');
      }
    }, 500);
    watch.unref();
  });
}
