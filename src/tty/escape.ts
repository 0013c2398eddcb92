/**
 * ssh-style escape sequences on the input stream of an interactive session: after a newline (or at the
 * start), `~.` disconnects and `~~` sends a single `~`. Anything else after `~` is passed through as typed.
 */
export type EscapeResult = { data: Buffer; disconnect: boolean };

export class EscapeFilter {
  private atLineStart = true;
  private pendingTilde = false;

  push(chunk: Buffer): EscapeResult {
    const out: number[] = [];
    for (const b of chunk) {
      if (this.pendingTilde) {
        this.pendingTilde = false;
        if (b === 0x2e /* . */) return { data: Buffer.from(out), disconnect: true };
        if (b === 0x7e /* ~ */) {
          out.push(0x7e);
          this.atLineStart = false;
          continue;
        }
        out.push(0x7e);
      } else if (this.atLineStart && b === 0x7e) {
        this.pendingTilde = true;
        continue;
      }
      out.push(b);
      this.atLineStart = b === 0x0d || b === 0x0a;
    }
    return { data: Buffer.from(out), disconnect: false };
  }
}
