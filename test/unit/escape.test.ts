import { describe, expect, it } from 'vitest';
import { EscapeFilter } from '../../src/tty/escape.js';

const push = (f: EscapeFilter, s: string) => {
  const r = f.push(Buffer.from(s));
  return { data: r.data.toString(), disconnect: r.disconnect };
};

describe('EscapeFilter', () => {
  it('disconnects on ~. at the start and after a newline', () => {
    expect(push(new EscapeFilter(), '~.')).toEqual({ data: '', disconnect: true });
    expect(push(new EscapeFilter(), 'ls\r~.')).toEqual({ data: 'ls\r', disconnect: true });
    const f = new EscapeFilter();
    expect(push(f, 'echo\n')).toEqual({ data: 'echo\n', disconnect: false });
    expect(push(f, '~')).toEqual({ data: '', disconnect: false });
    expect(push(f, '.')).toEqual({ data: '', disconnect: true });
  });

  it('passes ~ through in the middle of a line, and ~~ as one ~', () => {
    expect(push(new EscapeFilter(), 'a~.')).toEqual({ data: 'a~.', disconnect: false });
    expect(push(new EscapeFilter(), '~~.')).toEqual({ data: '~.', disconnect: false });
    expect(push(new EscapeFilter(), '~x')).toEqual({ data: '~x', disconnect: false });
  });
});
