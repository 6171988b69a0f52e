// A collaborator's signer written the way a JavaScript client would: the
// submission's `data` (JSON on stdin) without its `signature` field, made
// canonical by RFC 8785 (the `canonicalize` package), signed with Ed25519 by
// node:crypto. Prints the base64 signature.
//
//   node sign.mjs KEY.pem < data.json
//
// KEY.pem: the Ed25519 private key, unencrypted PKCS#8 PEM.
import { createPrivateKey, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import canonicalize from 'canonicalize';

const [keyPath] = process.argv.slice(2);
if (!keyPath) {
  process.stderr.write('usage: node sign.mjs KEY.pem < data.json\n');
  process.exit(2);
}
const key = createPrivateKey(readFileSync(keyPath));
const { signature: _ignored, ...unsigned } = JSON.parse(readFileSync(0, 'utf8'));
const bytes = Buffer.from(canonicalize(unsigned), 'utf8');
process.stdout.write(sign(null, bytes, key).toString('base64') + '\n');
