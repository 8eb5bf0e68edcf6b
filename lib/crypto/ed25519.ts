/** Ed25519 signature checks and the statements users sign, shared by server and clients. */
import { fromBase64Url } from "../util/base64.ts";

const ED25519 = { name: "Ed25519" } as const;

// ---- key checks: the curve -x^2 + y^2 = 1 + d x^2 y^2 over GF(p), in BigInt arithmetic -------
// Only for checking public keys (a few hundred multiplications); signing and verifying stay
// with WebCrypto.

const P = 2n ** 255n - 19n;
/**
 * The curve constant d = -121665/121666 mod p and sqrt(-1) = 2^((p-1)/4) mod p (RFC 8032, 5.1),
 * written out: working them out at load cost every process ~3 ms of CPU (cold BigInt code).
 */
const D = 37095705934669439343138083508754565189542113879843219016388785533085940283555n;
const SQRT_M1 = 19681161376707505956807079304988542015446066515923890162744021073123829784752n;

function mod(a: bigint): bigint {
  const r = a % P;
  return r >= 0n ? r : r + P;
}

function power(base: bigint, exponent: bigint): bigint {
  let result = 1n;
  let b = mod(base);
  for (let e = exponent; e > 0n; e >>= 1n) {
    if (e & 1n) result = (result * b) % P;
    b = (b * b) % P;
  }
  return result;
}

/** A point in extended coordinates (X:Y:Z:T), x = X/Z, y = Y/Z, xy = T/Z. */
type Point = readonly [bigint, bigint, bigint, bigint];

function double(p: Point): Point {
  // add-2008-hwcd-3 with both inputs the same point (a = -1).
  return add(p, p);
}

function add([x1, y1, z1, t1]: Point, [x2, y2, z2, t2]: Point): Point {
  const a = mod((y1 - x1) * (y2 - x2));
  const b = mod((y1 + x1) * (y2 + x2));
  const c = mod(t1 * 2n * D * t2);
  const d = mod(z1 * 2n * z2);
  const e = b - a, f = d - c, g = d + c, h = b + a;
  return [mod(e * f), mod(g * h), mod(f * g), mod(e * h)];
}

/** Decodes a 32-byte public key (RFC 8032 5.1.3), refusing non-canonical encodings. */
function decodePoint(bytes: Uint8Array): Point | undefined {
  if (bytes.length !== 32) return undefined;
  let y = 0n;
  for (let i = 31; i >= 0; i--) y = (y << 8n) | BigInt(i === 31 ? bytes[i]! & 0x7f : bytes[i]!);
  const sign = bytes[31]! >> 7;
  if (y >= P) return undefined; // a second spelling of y - p
  const u = mod(y * y - 1n);
  const v = mod(D * y * y + 1n);
  let x = mod(u * power(v, 3n) * power(u * power(v, 7n), (P - 5n) / 8n));
  const vx2 = mod(v * x * x);
  if (vx2 === mod(-u)) x = mod(x * SQRT_M1);
  else if (vx2 !== u) return undefined; // not on the curve
  if (x === 0n && sign === 1) return undefined; // -0: a second spelling of x = 0
  if (Number(x & 1n) !== sign) x = P - x;
  return [x, y, 1n, mod(x * y)];
}

/**
 * True when `bytes` is a canonically encoded Ed25519 public key of large order. Small-order
 * keys (the identity, the all-zero key, the points of order 2, 4 and 8) make a fixed signature
 * "verify" for a good share of all messages, so they could pass any proof; a non-canonical
 * encoding would give one key two spellings. Both are refused wherever a key is accepted.
 */
export function isStrongEd25519Key(bytes: Uint8Array): boolean {
  const point = decodePoint(bytes);
  if (!point) return false;
  const [x, y, z] = double(double(double(point))); // [8]P is the identity only for small order
  return !(x === 0n && y === z);
}

const strongKeys = new Set<string>();

/** {@link isStrongEd25519Key} for a base64url key, remembered (keys recur: contacts, peers). */
export function isStrongPublicKey(publicKey: string): boolean {
  if (strongKeys.has(publicKey)) return true;
  let ok: boolean;
  try {
    ok = isStrongEd25519Key(fromBase64Url(publicKey));
  } catch {
    ok = false;
  }
  if (ok) {
    if (strongKeys.size >= 10_000) strongKeys.clear();
    strongKeys.add(publicKey);
  }
  return ok;
}

/**
 * Checks an Ed25519 signature by the holder of `publicKey` (base64url). Never throws. A weak
 * key ({@link isStrongEd25519Key}) never verifies anything.
 */
export async function verifySignature(
  publicKey: string,
  signature: string,
  data: Uint8Array<ArrayBuffer>,
): Promise<boolean> {
  const key = verifyingKey(publicKey);
  if (!key) return false;
  try {
    return await crypto.subtle.verify(ED25519, await key, fromBase64Url(signature), data);
  } catch {
    return false;
  }
}

/** Imported keys, by base64url key: imported once (peers and authors recur), a bounded few. */
const imported = new Map<string, Promise<CryptoKey>>();

/** The WebCrypto key for a strong `publicKey`; undefined for a weak or malformed one. */
function verifyingKey(publicKey: string): Promise<CryptoKey> | undefined {
  if (!isStrongPublicKey(publicKey)) return undefined;
  let key = imported.get(publicKey);
  if (!key) {
    key = crypto.subtle.importKey("raw", fromBase64Url(publicKey), ED25519, false, ["verify"]);
    key.catch(() => imported.delete(publicKey));
    if (imported.size >= 1_024) imported.delete(imported.keys().next().value!);
    imported.set(publicKey, key);
  }
  return key;
}

/** What a user signs to publish their mail key, so others know it is theirs. */
export function mailKeyStatement(user: string, mailKey: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(`confab-mail-key-v1\n${user.toLowerCase()}\n${mailKey}`);
}

/**
 * What a reader signs for each message it read (a read receipt): the sender's client turns `*`
 * into `**` only for a receipt signed by the reader's identity key, never on the server's word.
 * Names are lower-cased (names are unique ignoring case).
 */
export function receiptStatement(receipt: {
  sender: string;
  reader: string;
  msgId: string;
  readAt: number;
}): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(
    `confab-receipt-v1\n${receipt.sender.toLowerCase()}\n${receipt.reader.toLowerCase()}\n` +
      `${receipt.msgId}\n${receipt.readAt}`,
  );
}
