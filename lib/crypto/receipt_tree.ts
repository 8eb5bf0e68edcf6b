/**
 * Read receipts for a batch: the reader signs once for every message of a `show` batch, over
 * the root of a hash tree of their ids, and each message's receipt carries its path to that
 * root, so the sender checks any one receipt on its own with one signature check per batch.
 * Pure functions of bytes, shared by the reader, the server (which works out each id's path
 * from the ids confirmed) and the sender.
 *
 * The tree: a leaf is SHA-256(0x00 || id), a node SHA-256(0x01 || left || right) (the prefixes
 * keep a leaf from passing for a node); nodes pair up level by level, and a last node without a
 * partner goes up unchanged. A proof is, from the leaf up, one entry per level where the node
 * has a partner: a side byte (0: the partner is on the left, 1: on the right) and its 32 bytes.
 */
import { sha256 } from "./sha256_small.ts";
import { fromBase64Url, toBase64Url } from "../util/base64.ts";

const HASH_LEN = 32;
const ENTRY_LEN = 1 + HASH_LEN;
/** Levels a proof may climb: 2^16 ids, far above a batch (500). */
export const MAX_PROOF_LEVELS = 16;
/** Longest proof as base64url. */
export const MAX_PROOF_LENGTH = Math.ceil((MAX_PROOF_LEVELS * ENTRY_LEN * 4) / 3);

const encoder = new TextEncoder();

// A tree of a batch is a thousand hashes over a few dozen bytes each: sha256_small.ts hashes
// them in place (a node:crypto Hash object per input cost three times the hashing).
function leaf(id: string): Uint8Array {
  const input = new Uint8Array(1 + id.length * 3);
  const { written } = encoder.encodeInto(id, input.subarray(1)); // input[0] = 0x00
  return sha256(input.subarray(0, 1 + written));
}

function node(left: Uint8Array, right: Uint8Array): Uint8Array {
  const input = new Uint8Array(1 + left.length + right.length);
  input[0] = 1;
  input.set(left, 1);
  input.set(right, 1 + left.length);
  return sha256(input);
}

/** The levels of the tree over `ids`, leaves first, the root alone last. */
function levels(ids: readonly string[]): Uint8Array[][] {
  if (ids.length === 0) throw new RangeError("a receipt tree needs at least one id");
  const all = [ids.map(leaf)];
  for (let level = all[0]!; level.length > 1;) {
    const up: Uint8Array[] = [];
    for (let i = 0; i < level.length; i += 2) {
      up.push(i + 1 < level.length ? node(level[i]!, level[i + 1]!) : level[i]!);
    }
    all.push(up);
    level = up;
  }
  return all;
}

/** The root of the tree over `ids` (in that order), base64url: what the reader signs. */
export function receiptRoot(ids: readonly string[]): string {
  const all = levels(ids);
  return toBase64Url(all[all.length - 1]![0]!);
}

/** Each id's proof (base64url; empty for a tree of one), in the order of `ids`. */
export function receiptProofs(ids: readonly string[]): string[] {
  const all = levels(ids);
  const below = all.length - 1; // the root has no partner
  // One buffer per proof, written in place (an array of entries per id, then a copy, was a
  // third of the server's work on a confirmed batch).
  const entry = new Uint8Array(below * ENTRY_LEN);
  return ids.map((_, index) => {
    let i = index;
    let at = 0;
    for (let l = 0; l < below; l++, i >>= 1) {
      const level = all[l]!;
      const partner = i % 2 === 0 ? i + 1 : i - 1;
      if (partner >= level.length) continue;
      entry[at] = partner > i ? 1 : 0;
      entry.set(level[partner]!, at + 1);
      at += ENTRY_LEN;
    }
    return toBase64Url(entry.subarray(0, at));
  });
}

/**
 * The root that `proof` leads to from `id`, base64url; undefined when the proof is malformed.
 * The receipt holds only if the reader signed that root.
 */
export function rootOfProof(id: string, proof: string): string | undefined {
  let bytes: Uint8Array;
  try {
    bytes = fromBase64Url(proof);
  } catch {
    return undefined;
  }
  if (bytes.length % ENTRY_LEN !== 0 || bytes.length > MAX_PROOF_LEVELS * ENTRY_LEN) {
    return undefined;
  }
  let hash = leaf(id);
  for (let at = 0; at < bytes.length; at += ENTRY_LEN) {
    const side = bytes[at];
    const partner = bytes.subarray(at + 1, at + ENTRY_LEN);
    if (side === 1) hash = node(hash, partner);
    else if (side === 0) hash = node(partner, hash);
    else return undefined;
  }
  return toBase64Url(hash);
}

/**
 * What a reader signs for a batch of messages read (a batch read receipt): the sender's
 * client turns `*` into `**` only with that signature and the message's path to `root`.
 * Names are lower-cased (names are unique ignoring case).
 */
export function batchReceiptStatement(receipt: {
  sender: string;
  reader: string;
  readAt: number;
  root: string;
}): Uint8Array<ArrayBuffer> {
  return encoder.encode(
    `confab-receipts-v2\n${receipt.sender.toLowerCase()}\n${receipt.reader.toLowerCase()}\n` +
      `${receipt.readAt}\n${receipt.root}`,
  );
}
