/**
 * The TLS the workstations' hosts serve: a CA made when the fake starts (openssl, an EC P-256 key, valid a week) and
 * one server certificate it signs for `127.0.0.1` and `localhost` (what a workstation's `host` names). Clients trust
 * the CA through NODE_EXTRA_CA_CERTS (Node), CLOUDSDK_CORE_CUSTOM_CA_CERTS_FILE (gcloud) or a `ca` option.
 */
import { execFile } from 'node:child_process';
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export interface FakeTls {
  /** The CA's certificate (PEM), a file in the fake's directory. */
  caFile: string;
  ca: string;
  key: string;
  cert: string;
}

const OPENSSL = '/usr/bin/openssl';

function openssl(args: string[], cwd: string): Promise<void> {
  return new Promise((resolve, reject) => {
    execFile(OPENSSL, args, { cwd, env: { PATH: '/usr/bin:/bin' } }, (e, _out, err) =>
      e ? reject(new Error(`openssl ${args[0]} failed: ${String(err).trim() || e.message}`)) : resolve(),
    );
  });
}

/** Makes the CA and the host certificate in `dir` (0700); the CA's key is removed once it has signed. */
export async function makeTls(dir: string): Promise<FakeTls> {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await openssl(
    [
      'req',
      '-x509',
      ...ec,
      '-keyout',
      'ca.key',
      '-out',
      'ca.pem',
      '-days',
      '7',
      '-subj',
      '/O=onmemos/CN=onmemos workstations fake CA',
      '-addext',
      'basicConstraints=critical,CA:TRUE',
      '-addext',
      'keyUsage=critical,keyCertSign,cRLSign',
    ],
    dir,
  );
  await openssl(['req', ...ec, '-keyout', 'host.key', '-out', 'host.csr', '-subj', '/O=onmemos/CN=localhost'], dir);
  writeFileSync(
    join(dir, 'host.ext'),
    [
      'subjectAltName=IP:127.0.0.1,DNS:localhost',
      'basicConstraints=critical,CA:FALSE',
      'keyUsage=critical,digitalSignature',
      'extendedKeyUsage=serverAuth',
      'subjectKeyIdentifier=hash',
      'authorityKeyIdentifier=keyid',
      '',
    ].join('\n'),
  );
  await openssl(
    [
      'x509',
      '-req',
      '-in',
      'host.csr',
      '-CA',
      'ca.pem',
      '-CAkey',
      'ca.key',
      '-set_serial',
      `0x${Date.now().toString(16)}`,
      '-days',
      '7',
      '-extfile',
      'host.ext',
      '-out',
      'host.pem',
    ],
    dir,
  );
  for (const f of ['ca.key', 'host.csr', 'host.ext']) rmSync(join(dir, f), { force: true });
  const caFile = join(dir, 'ca.pem');
  return {
    caFile,
    ca: readFileSync(caFile, 'utf8'),
    key: readFileSync(join(dir, 'host.key'), 'utf8'),
    cert: readFileSync(join(dir, 'host.pem'), 'utf8'),
  };
}
