#!/usr/bin/env node
// A collaborator's QC client (docs/collaborators.md): reads the `data` of a `qc-submitted` event (JSON
// on stdin), signs it, and submits it to Anyam's production service over Kafka or HTTP.
//
//   node dist/qc-client.js sign  --key KEY.pem                      < data.json   prints the signed data
//   node dist/qc-client.js kafka --key KEY.pem --credentials FILE   < data.json   publishes to qc-submissions
//   node dist/qc-client.js http  --key KEY.pem --credentials FILE [--idempotency-key K] < data.json
//
// With --as-signed instead of --key, `kafka` and `http` send data that was signed before (e.g. by `sign`
// on another machine) exactly as given. FILE is the credentials file `anyam collaborator onboard` writes
// (KEY=value lines). What happened is printed as one JSON line on stdout; exit 0 when the submission was
// taken, 1 when the service refused it, 2 on any other failure (one line on stderr saying what to do).
import { createPrivateKey, randomUUID, sign, type KeyObject } from 'node:crypto';
import { readFileSync } from 'node:fs';
import canonicalize from 'canonicalize';
import { Kafka, logLevel, type SASLOptions } from 'kafkajs';

const TOPIC = 'qc-submissions';
const CONTENT_TYPE = 'application/cloudevents+json';
/** The contract version of `qc-submitted` this client writes: defects and inspector are codes. */
const DATAVERSION = 2;
const REQUIRED = ['submission_id', 'piece_id', 'collaborator_id', 'result', 'inspector', 'inspected_at', 'defects'];

type Data = Record<string, unknown>;
type Credentials = Record<string, string>;

/** A failure the user can act on: one line on stderr, exit 2. */
class Failure extends Error {}

// --- signing (SPEC §6) ---------------------------------------------------------------------------

/** The bytes a signature covers: RFC 8785 canonical JSON of `data` without `signature`. */
export function canonicalBytes(data: Data): Buffer {
  const { signature: _ignored, ...unsigned } = data;
  const text = canonicalize(unsigned);
  if (text === undefined) throw new Failure('the data has no RFC 8785 canonical form');
  return Buffer.from(text, 'utf8');
}

/** A copy of `data` with its `signature`: Ed25519 over the canonical bytes, base64. */
export function signed(key: KeyObject, data: Data): Data {
  const { signature: _old, ...unsigned } = data;
  return { ...unsigned, signature: sign(null, canonicalBytes(unsigned), key).toString('base64') };
}

function loadKey(path: string): KeyObject {
  let pem: Buffer;
  try {
    pem = readFileSync(path);
  } catch (err) {
    throw new Failure(`cannot read the key file ${path}: ${(err as Error).message}`);
  }
  let key: KeyObject;
  try {
    key = createPrivateKey(pem);
  } catch (err) {
    throw new Failure(`${path} is not an unencrypted PEM private key: ${(err as Error).message}`);
  }
  if (key.asymmetricKeyType !== 'ed25519') {
    throw new Failure(`${path} holds an ${key.asymmetricKeyType} key, not an Ed25519 key`);
  }
  return key;
}

// --- the envelope (SPEC §5) ----------------------------------------------------------------------

/** Now in Asia/Jakarta (UTC+7, no daylight saving), RFC 3339 with its offset. */
function wibNow(): string {
  return new Date(Date.now() + 7 * 3600_000).toISOString().replace('Z', '+07:00');
}

/** The `qc-submitted` CloudEvent around signed `data`, as UTF-8 JSON. */
function cloudEvent(data: Data): Buffer {
  const event = {
    specversion: '1.0',
    id: randomUUID(),
    source: `/collaborators/${text(data, 'collaborator_id')}`,
    type: 'qc-submitted',
    subject: text(data, 'piece_id'),
    time: wibNow(),
    datacontenttype: 'application/json',
    dataversion: DATAVERSION,
    data,
  };
  return Buffer.from(JSON.stringify(event), 'utf8');
}

// --- Kafka ---------------------------------------------------------------------------------------

function sasl(credentials: Credentials): SASLOptions | undefined {
  const protocol = credentials.ANYAM_KAFKA_SECURITY_PROTOCOL ?? 'PLAINTEXT';
  if (!protocol.startsWith('SASL')) return undefined;
  const username = required(credentials, 'ANYAM_KAFKA_SASL_USERNAME');
  const password = required(credentials, 'ANYAM_KAFKA_SASL_PASSWORD');
  switch (required(credentials, 'ANYAM_KAFKA_SASL_MECHANISM')) {
    case 'SCRAM-SHA-512': return { mechanism: 'scram-sha-512', username, password };
    case 'SCRAM-SHA-256': return { mechanism: 'scram-sha-256', username, password };
    case 'PLAIN': return { mechanism: 'plain', username, password };
    default: throw new Failure(`unsupported SASL mechanism ${credentials.ANYAM_KAFKA_SASL_MECHANISM}`);
  }
}

async function sendKafka(credentials: Credentials, data: Data): Promise<number> {
  const bootstrap = required(credentials, 'ANYAM_KAFKA_BOOTSTRAP');
  const topic = (credentials.ANYAM_TOPIC_PREFIX ?? '') + TOPIC;
  const kafka = new Kafka({
    clientId: 'anyam-qc-client-ts',
    brokers: bootstrap.split(',').map((b) => b.trim()),
    ssl: (credentials.ANYAM_KAFKA_SECURITY_PROTOCOL ?? '').endsWith('SSL'),
    sasl: sasl(credentials),
    connectionTimeout: 10_000,
    requestTimeout: 30_000,
    logLevel: logLevel.NOTHING,
  });
  const producer = kafka.producer({ allowAutoTopicCreation: false });
  const pieceId = text(data, 'piece_id');
  try {
    await producer.connect();
    const [sent] = await producer.send({
      topic,
      acks: -1,
      messages: [{ key: pieceId, value: cloudEvent(data), headers: { 'content-type': CONTENT_TYPE } }],
    });
    print({ transport: 'kafka', topic, partition: sent.partition, offset: Number(sent.baseOffset),
            submission_id: text(data, 'submission_id'), piece_id: pieceId });
    return 0;
  } catch (err) {
    if (err instanceof Failure) throw err;
    throw new Failure(`publishing to ${topic} at ${bootstrap} failed: ${(err as Error).message}`);
  } finally {
    await producer.disconnect().catch(() => undefined);
  }
}

// --- HTTP ----------------------------------------------------------------------------------------

async function sendHttp(credentials: Credentials, data: Data, idempotencyKey?: string): Promise<number> {
  const base = required(credentials, 'ANYAM_PRODUCTION_URL').replace(/\/+$/, '');
  let response: Response;
  try {
    response = await fetch(`${base}/qc-submissions`, {
      method: 'POST',
      headers: {
        Authorization: `Bearer ${required(credentials, 'ANYAM_COLLABORATOR_TOKEN')}`,
        'Content-Type': 'application/json',
        // A retry with the same key gets the first answer and changes nothing (SPEC §9).
        'Idempotency-Key': idempotencyKey ?? text(data, 'submission_id'),
      },
      body: JSON.stringify(data),
      signal: AbortSignal.timeout(60_000),
    });
  } catch (err) {
    throw new Failure(`POST ${base}/qc-submissions failed: ${(err as Error).message}`);
  }
  const body = await response.text();
  let parsed: unknown = body;
  try {
    parsed = JSON.parse(body);
  } catch {
    // not JSON: reported as text
  }
  print({ transport: 'http', status: response.status, response: parsed });
  return response.ok ? 0 : 1;
}

// --- inputs --------------------------------------------------------------------------------------

function readData(): Data {
  let data: unknown;
  try {
    data = JSON.parse(readFileSync(0, 'utf8'));
  } catch (err) {
    throw new Failure(`stdin is not JSON: ${(err as Error).message}`);
  }
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new Failure("stdin must hold one JSON object: the QC result's data");
  }
  const missing = REQUIRED.filter((field) => !(field in data));
  if (missing.length) throw new Failure(`the data lacks ${missing.join(', ')}`);
  return data as Data;
}

/** The credentials file's values; the data must be for the collaborator the file is. */
function readCredentials(path: string | undefined, data: Data): Credentials {
  if (!path) throw new Failure('pass --credentials FILE (the file `anyam collaborator onboard` wrote)');
  let lines: string[];
  try {
    lines = readFileSync(path, 'utf8').split(/\r?\n/);
  } catch (err) {
    throw new Failure(`cannot read ${path}: ${(err as Error).message}`);
  }
  const values: Credentials = {};
  lines.forEach((raw, index) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const eq = line.indexOf('=');
    if (eq <= 0) throw new Failure(`${path}:${index + 1} is not a KEY=value line`);
    values[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  });
  const mine = values.ANYAM_COLLABORATOR_ID;
  if (mine !== undefined && mine !== text(data, 'collaborator_id')) {
    throw new Failure(`the data is for collaborator ${text(data, 'collaborator_id')}, but ${path} holds the ` +
                      `credentials of ${mine}`);
  }
  return values;
}

function required(values: Credentials, key: string): string {
  const value = values[key];
  if (!value) throw new Failure(`the credentials file has no ${key}`);
  return value;
}

function text(data: Data, field: string): string {
  const value = data[field];
  if (typeof value !== 'string') throw new Failure(`\`${field}\` must be a string`);
  return value;
}

function print(value: unknown): void {
  process.stdout.write(JSON.stringify(value) + '\n');
}

// --- main ----------------------------------------------------------------------------------------

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command) {
    throw new Failure('usage: qc-client sign|kafka|http [--key KEY.pem | --as-signed] [--credentials FILE] ' +
                      '[--idempotency-key K] < data.json');
  }
  const options: Record<string, string> = {};
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i];
    if (arg === '--as-signed') options['as-signed'] = 'true';
    else if (arg === '--key' || arg === '--credentials' || arg === '--idempotency-key') {
      if (i + 1 >= rest.length) throw new Failure(`${arg} needs a value`);
      options[arg.slice(2)] = rest[++i];
    } else throw new Failure(`unknown argument ${arg}`);
  }
  if (!['sign', 'kafka', 'http'].includes(command)) {
    throw new Failure(`unknown command ${command}; use sign, kafka or http`);
  }
  let data = readData();
  if (options['as-signed']) {
    if (typeof data.signature !== 'string') {
      throw new Failure('--as-signed: the data on stdin has no `signature`; sign it first (`sign`)');
    }
  } else {
    if (!options.key) throw new Failure('pass --key KEY.pem (the collaborator\'s Ed25519 private key, PKCS#8 PEM)');
    data = signed(loadKey(options.key), data);
  }
  if (command === 'sign') {
    print(data);
    return 0;
  }
  const credentials = readCredentials(options.credentials, data);
  return command === 'kafka' ? sendKafka(credentials, data) : sendHttp(credentials, data, options['idempotency-key']);
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    process.stderr.write(`error: ${err instanceof Failure ? err.message : String(err)}\n`);
    process.exitCode = 2;
  },
);
