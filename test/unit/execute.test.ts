import { describe, expect, it } from 'vitest';
import { utf8Boundary } from '../../src/server/execute.js';

describe('the buffered execute', () => {
  it('cuts UTF-8 only between characters', () => {
    const euro = Buffer.from('a€€'); // 1 + 3 + 3 bytes
    expect([1, 2, 3, 4, 5, 6, 7].map((end) => utf8Boundary(euro, end))).toEqual([1, 1, 1, 4, 4, 4, 7]);
    const four = Buffer.from('😀x');
    expect([1, 2, 3, 4, 5].map((end) => utf8Boundary(four, end))).toEqual([0, 0, 0, 4, 5]);
  });
});
