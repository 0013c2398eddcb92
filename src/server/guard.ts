/**
 * What guards the server's memory and processes whoever the client: the concurrency cap per API key
 * (serve --max-concurrent).
 */
import { HttpError } from './http.js';

/** How many executes, exec streams and JSON shells each API key has in flight, against a cap. */
export class ConcurrencyLimit {
  private readonly inFlight = new Map<string, number>();

  constructor(readonly max: number) {}

  /** Takes a slot for this key, or throws 429; the function returned gives it back (once). */
  acquire(key: string): () => void {
    const n = this.inFlight.get(key) ?? 0;
    if (n >= this.max) {
      throw new HttpError(
        429,
        'too_many_requests',
        `this API key already has ${n} executes, exec streams and shells in flight, the most serve --max-concurrent allows; retry when one ends`,
      );
    }
    this.inFlight.set(key, n + 1);
    let given = false;
    return () => {
      if (given) return;
      given = true;
      const left = (this.inFlight.get(key) ?? 1) - 1;
      if (left > 0) this.inFlight.set(key, left);
      else this.inFlight.delete(key);
    };
  }
}
