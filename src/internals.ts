/**
 * Not part of onmemos' API: the pieces bench/ measures on their own (what limits add to a create and a removal).
 */
export { detectCgroups, SessionGroup, sessionParent } from './providers/local/cgroups.js';
export { makeDiskImage } from './providers/local/disk.js';
