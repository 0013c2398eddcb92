/**
 * Set-up of the `rootless` vitest project. As root it makes the ordinary user the suites run onmemos as, and makes
 * /dev/net/tun open to every user, as udev does on a standard system (some minimal VMs leave it 0600; slirp4netns,
 * which gives rootless sessions their network, opens it as that user). Not as root, the suites run as the caller.
 */
import { execFileSync } from 'node:child_process';
import { chmodSync, statSync } from 'node:fs';
import { TEST_USER_NAME } from '../helpers/cli.js';

export default function setup(): void {
  if (process.getuid?.() !== 0) return;
  try {
    execFileSync('id', ['-u', TEST_USER_NAME], { stdio: 'ignore' });
  } catch {
    execFileSync('useradd', ['--create-home', '--shell', '/bin/bash', TEST_USER_NAME], { stdio: 'inherit' });
  }
  try {
    if ((statSync('/dev/net/tun').mode & 0o666) !== 0o666) chmodSync('/dev/net/tun', 0o666);
  } catch {}
}
