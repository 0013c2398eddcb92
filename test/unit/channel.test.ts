import { describe, expect, it } from 'vitest';
import {
  CHANNEL,
  closeFrame,
  exitFromStatus,
  frame,
  parseFrame,
  parseResize,
  resizeFrame,
  startFailureStatus,
  statusFor,
} from '../../src/exec/v5.js';

describe('v5.channel.k8s.io framing', () => {
  it('frames and parses a channel byte plus payload, binary-safe', () => {
    const payload = Buffer.from([0, 1, 255, 10]);
    const f = frame(CHANNEL.stdout, payload);
    expect([...f]).toEqual([1, 0, 1, 255, 10]);
    expect(parseFrame(f)).toEqual({ channel: 1, payload });
    expect([...frame(CHANNEL.stdout)]).toEqual([1]); // the "stream is up" frame
    expect(parseFrame(Buffer.alloc(0))).toBeUndefined();
    expect([...closeFrame(CHANNEL.stdin)]).toEqual([255, 0]);
  });

  it('reports exit codes in metav1.Status the way the API server does, and reads them back', () => {
    expect(statusFor(0)).toEqual({ metadata: {}, status: 'Success' });
    const failure = statusFor(3);
    expect(failure).toMatchObject({
      status: 'Failure',
      reason: 'NonZeroExitCode',
      details: { causes: [{ reason: 'ExitCode', message: '3' }] },
    });
    for (const code of [0, 1, 3, 124, 137, 255]) {
      expect(exitFromStatus(JSON.stringify(statusFor(code)))).toEqual({ code });
    }
    // The API server's own wording (PROTOCOLS.md §1).
    const apiServer =
      '{"metadata":{},"status":"Failure","message":"command terminated with non-zero exit code: error executing command [sh -c exit 3], exit code 3","reason":"NonZeroExitCode","details":{"causes":[{"reason":"ExitCode","message":"3"}]}}';
    expect(exitFromStatus(apiServer)).toEqual({ code: 3 });
    expect(JSON.stringify(statusFor(3, ['sh', '-c', 'exit 3']))).toBe(apiServer);
    expect(exitFromStatus('{"status":"Failure","message":"pod not found"}')).toEqual({
      code: 1,
      message: 'pod not found',
    });
    expect(exitFromStatus('not json').code).toBe(1);
    // A command that could not start at all is onmemos' own failure: 125, with the reason.
    expect(exitFromStatus(JSON.stringify(startFailureStatus('no exec group')))).toEqual({
      code: 125,
      message: 'no exec group',
    });
  });

  it('reads resize messages in either case and rejects nonsense', () => {
    expect(parseResize('{"Width":120,"Height":40}')).toEqual({ cols: 120, rows: 40 });
    expect(parseResize('{"width":80,"height":24}')).toEqual({ cols: 80, rows: 24 });
    expect(parseResize(resizeFrame(100, 30).subarray(1))).toEqual({ cols: 100, rows: 30 });
    for (const bad of [
      '{}',
      '{"width":0,"height":24}',
      '{"width":"80","height":24}',
      '[1,2]',
      'x',
      '{"width":1e9,"height":1}',
    ]) {
      expect(parseResize(bad), bad).toBeUndefined();
    }
  });
});
