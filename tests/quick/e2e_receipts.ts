/**
 * Read receipts are the reader's word, not the server's: end to end with real processes, a
 * malicious server (its operator writing to its database) that claims "read by bob" cannot turn
 * alice's `*` into `**`, neither with an unsigned receipt nor with one signed by someone else;
 * a receipt bob's client really signed does. Over SQLite, and over PostgreSQL with alice and bob
 * on two instances.
 */
import assert from "node:assert/strict";
import { receiptStatement } from "../../lib/crypto/ed25519.ts";
import { Identity } from "../../lib/peer/identity.ts";
import { type Deployment, deployments } from "../support/deployment.ts";
import { befriend, type Event, TestClient } from "../support/processes.ts";

/**
 * alice sends bob (logged out) `text`: it is stored on the server, `*`; then she logs out.
 * Returns its id.
 */
async function storedForBob(alice: TestClient, text: string): Promise<string> {
  await alice.send(text);
  const sent = await alice.event("sent", { text });
  await alice.event("stored", { id: sent.id });
  // alice goes away too: the receipts wait for her next login.
  await alice.send("/q");
  await alice.event("chat_closed");
  await alice.send("out");
  await alice.event("logged_out", { user: "alice" });
  return String(sent.id);
}

/** What alice's history says of message `id`. */
async function markOf(alice: TestClient, id: string): Promise<unknown> {
  await alice.send("history bob");
  const history = await alice.event("history", { chat: "bob" });
  return (history.entries as Event[]).find((e) => e.id === id)?.mark;
}

/** The server's operator writes a receipt into its database, as a malicious server would. */
async function forgeReceipt(
  d: Deployment,
  receipt: { msgId: string; readAt: number; sig?: string },
): Promise<void> {
  await d.sql(
    "INSERT INTO receipts (sender, msg_id, reader, read_at, sig) VALUES (?, ?, ?, ?, ?)",
    ["alice", receipt.msgId, "bob", receipt.readAt, receipt.sig ?? null],
  );
}

async function aliceWithMailForBob(d: Deployment) {
  const alice = await TestClient.start("alice", d.at("alice"));
  const bob = await TestClient.start("bob", d.at("bob"));
  await alice.signup("alice");
  await bob.signup("bob");
  await befriend(alice, bob);
  await bob.send("out");
  await bob.event("logged_out", { user: "bob" });
  await alice.send("chat bob");
  await alice.event("chat_opened", { with: "bob", online: false });
  return { alice, bob };
}

deployments.test('a malicious server forging "read by bob" cannot mark alice\'s message read', async (d) => {
  const { alice, bob } = await aliceWithMailForBob(d);
  await using _a = alice;
  await using _b = bob;
  const id = await storedForBob(alice, "did you read this?");

  // bob never read it; the server says he did, unsigned, as it could before.
  await forgeReceipt(d, { msgId: id, readAt: Date.now() });
  await alice.login("alice");
  const refused = await alice.event("error", { code: "RECEIPT_REJECTED" });
  assert.match(String(refused.message), /said to be from bob refused: not signed by bob/);
  assert.ok(!alice.events().some((e) => e.type === "read"), "no read event");
  assert.equal(await markOf(alice, id), "*");
});

deployments.test('a malicious server forging "read by bob" with a signature by another key cannot mark it read', async (d) => {
  const { alice, bob } = await aliceWithMailForBob(d);
  await using _a = alice;
  await using _b = bob;
  const id = await storedForBob(alice, "and this one?");

  // A well-formed receipt, signed, but by a key the server made up (not bob's pinned key).
  const { identity: impostor } = await Identity.generate();
  const readAt = Date.now();
  const sig = await impostor.sign(
    receiptStatement({ sender: "alice", reader: "bob", msgId: id, readAt }),
  );
  await forgeReceipt(d, { msgId: id, readAt, sig });
  await alice.login("alice");
  await alice.event("error", { code: "RECEIPT_REJECTED" });
  assert.equal(await markOf(alice, id), "*");

  // When bob really reads it, his client's signed receipt turns it into **.
  await bob.login("bob");
  await bob.send("show alice");
  await bob.event("shown", { from: "alice" });
  const read = await alice.event("read", { by: "bob" });
  assert.deepEqual(read.ids, [id]);
  assert.equal(await markOf(alice, id), "**");
});
