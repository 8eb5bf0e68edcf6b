/**
 * Unit tests for lib/crypto/receipt_tree.ts: the hash tree behind batch read receipts. Every
 * id's path leads to the root the reader signed; no path leads there from an id outside the
 * batch, and a path changed in any way leads elsewhere.
 */
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import {
  batchReceiptStatement,
  MAX_PROOF_LENGTH,
  receiptProofs,
  receiptRoot,
  rootOfProof,
} from "../../lib/crypto/receipt_tree.ts";
import { MAX_RECEIPT_PROOF_LENGTH } from "../../lib/protocol/messages.ts";
import { fromBase64Url, toBase64Url } from "../../lib/util/base64.ts";

const idsOf = (n: number) => Array.from({ length: n }, () => crypto.randomUUID());

Deno.test("receiptProofs() gives every id of a batch of 1 to 70, and of 500, a path to receiptRoot()", () => {
  for (const n of [...Array.from({ length: 70 }, (_, i) => i + 1), 500]) {
    const ids = idsOf(n);
    const root = receiptRoot(ids);
    const proofs = receiptProofs(ids);
    assert.equal(proofs.length, n);
    ids.forEach((id, i) => assert.equal(rootOfProof(id, proofs[i]!), root, `${i} of ${n}`));
    // A path is at most one entry (33 bytes) per level.
    const longest = Math.max(...proofs.map((p) => fromBase64Url(p).length));
    assert.ok(longest <= 33 * Math.ceil(Math.log2(n)), `${n}: ${longest}`);
  }
});

Deno.test("the tree is the one documented: leaves and nodes hashed with their prefixes, a lone node goes up", () => {
  const h = (...parts: Uint8Array[]) => {
    const hash = createHash("sha256");
    for (const p of parts) hash.update(p);
    return new Uint8Array(hash.digest());
  };
  const leaf = (id: string) => h(Uint8Array.of(0), new TextEncoder().encode(id));
  const node = (a: Uint8Array, b: Uint8Array) => h(Uint8Array.of(1), a, b);
  const [a, b, c] = ["a", "b", "c"];
  assert.equal(receiptRoot([a]), toBase64Url(leaf(a)));
  assert.equal(receiptRoot([a, b, c]), toBase64Url(node(node(leaf(a), leaf(b)), leaf(c))));
  assert.deepEqual(receiptProofs([a]), [""]);
});

Deno.test("rootOfProof() leads elsewhere for an id outside the batch, another id's path or any change", () => {
  const ids = idsOf(9);
  const root = receiptRoot(ids);
  const proofs = receiptProofs(ids);
  assert.notEqual(rootOfProof(crypto.randomUUID(), proofs[0]!), root);
  assert.notEqual(rootOfProof(ids[0]!, proofs[1]!), root);
  const bytes = fromBase64Url(proofs[4]!);
  for (let at = 0; at < bytes.length; at++) {
    const changed = bytes.slice();
    changed[at]! ^= 0x01;
    const led = rootOfProof(ids[4]!, toBase64Url(changed));
    assert.ok(led === undefined || led !== root, `byte ${at}`);
  }
  // Cut short, or one entry too many: elsewhere, or malformed.
  assert.notEqual(rootOfProof(ids[4]!, toBase64Url(bytes.subarray(0, 33))), root);
  assert.equal(rootOfProof(ids[4]!, toBase64Url(bytes.subarray(0, 32))), undefined);
  assert.equal(rootOfProof(ids[4]!, "not base64!"), undefined);
  assert.equal(rootOfProof(ids[4]!, toBase64Url(new Uint8Array(33 * 17))), undefined);
  // Inner nodes do not pass for leaves: the root itself is no id of the batch.
  assert.notEqual(rootOfProof(root, ""), root);
});

Deno.test("batchReceiptStatement() binds both names (case-blind), the time and the root", () => {
  const base = { sender: "Alice", reader: "bob", readAt: 5, root: receiptRoot(["x"]) };
  const text = new TextDecoder().decode(batchReceiptStatement(base));
  assert.equal(text, `confab-receipts-v2\nalice\nbob\n5\n${base.root}`);
  assert.equal(MAX_PROOF_LENGTH, MAX_RECEIPT_PROOF_LENGTH, "the wire allows the longest path");
});
