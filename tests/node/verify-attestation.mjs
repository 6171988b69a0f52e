// A reader of Anyam's service attestations written from docs/trust.md alone, the way a
// JavaScript consumer would: node:crypto for SHA-256 and Ed25519, nothing else.
//
//   node verify-attestation.mjs < job.json
//
// job.json: {"public_key": base64 of the owner's 32-byte key,
//            "records": [{"value": base64, "headers": [[name, base64 of the header's bytes], ...]}, ...]}
// Prints a JSON array: for each record, true when attested, else the reason it is not.
import { createHash, createPublicKey, verify } from 'node:crypto';
import { readFileSync } from 'node:fs';

const LABEL = Buffer.concat([Buffer.from('anyam/attestation/tree-head/v1', 'ascii'), Buffer.from([0])]);
const MAX_TREE_SIZE = 65536;
const PROOF = /^(0|[1-9][0-9]{0,4}):([1-9][0-9]{0,4}):([A-Za-z0-9+/]*={0,2})$/;
const BASE64 = /^[A-Za-z0-9+/]*={0,2}$/;

const sha256 = (...parts) => createHash('sha256').update(Buffer.concat(parts)).digest();

// Canonical base64 only: Buffer.from() is lenient, so decode, re-encode and compare.
function strictBase64(text) {
  if (!BASE64.test(text) || text.length % 4 !== 0) return null;
  const bytes = Buffer.from(text, 'base64');
  return bytes.toString('base64') === text ? bytes : null;
}

// RFC 9162 §2.1.3.2: the root the leaf and its audit path lead to, or null.
function rootFromInclusionProof(leaf, index, size, path) {
  if (index >= size || path.length % 32 !== 0) return null;
  let fn = index, sn = size - 1, r = leaf;
  for (let offset = 0; offset < path.length; offset += 32) {
    if (sn === 0) return null;
    const p = path.subarray(offset, offset + 32);
    if (fn % 2 === 1 || fn === sn) {
      r = sha256(Buffer.from([1]), p, r);
      while (fn % 2 === 0 && fn !== 0) { fn >>= 1; sn >>= 1; }
    } else {
      r = sha256(Buffer.from([1]), r, p);
    }
    fn >>= 1; sn >>= 1;
  }
  return sn === 0 ? r : null;
}

function attested(value, headers, key) {
  const signatures = headers.filter(([name]) => name === 'anyam-attestation');
  const proofs = headers.filter(([name]) => name === 'anyam-attestation-proof');
  if (signatures.length !== 1 || proofs.length !== 1) return 'not exactly one of each header';
  const signatureText = signatures[0][1].toString('latin1');
  const signature = signatureText.length === 88 ? strictBase64(signatureText) : null;
  if (signature === null || signature.length !== 64) return 'signature header malformed';
  const matched = PROOF.exec(proofs[0][1].toString('latin1'));
  if (matched === null) return 'proof header malformed';
  const [index, size] = [Number(matched[1]), Number(matched[2])];
  const path = strictBase64(matched[3]);
  if (size > MAX_TREE_SIZE || index >= size || path === null || path.length > 16 * 32) return 'proof out of bounds';
  const root = rootFromInclusionProof(sha256(Buffer.from([0]), value), index, size, path);
  if (root === null) return 'path does not fit the tree';
  const sizeBytes = Buffer.alloc(8);
  sizeBytes.writeBigUInt64BE(BigInt(size));
  const head = Buffer.concat([LABEL, sizeBytes, root]);
  return verify(null, head, key, signature) ? true : 'no signed tree head';
}

const job = JSON.parse(readFileSync(0, 'utf8'));
const key = createPublicKey({
  key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(job.public_key, 'base64').toString('base64url') },
  format: 'jwk',
});
const verdicts = job.records.map(({ value, headers }) => attested(
  Buffer.from(value, 'base64'), headers.map(([name, raw]) => [name, Buffer.from(raw, 'base64')]), key));
process.stdout.write(JSON.stringify(verdicts) + '\n');
