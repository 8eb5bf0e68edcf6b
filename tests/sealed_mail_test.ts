/**
 * Unit tests for lib/peer/sealed_mail.ts: offline mail sealed to the recipient's mail key and
 * signed by the sender, opened and checked against the envelope the server delivers.
 */
import assert from "node:assert/strict";
import { HandshakeState } from "../lib/crypto/noise.ts";
import { Identity } from "../lib/peer/identity.ts";
import {
  type MailContent,
  MailKey,
  MailRejected,
  openMail,
  sealMail,
} from "../lib/peer/sealed_mail.ts";
import { MAX_SEALED_LENGTH, MAX_TEXT_LENGTH, Sealed } from "../lib/protocol/messages.ts";
import { fromBase64Url, toBase64Url } from "../lib/util/base64.ts";

interface Party {
  user: string;
  identity: Identity;
  mailKey: MailKey;
}

async function party(user: string): Promise<Party> {
  return {
    user,
    identity: (await Identity.generate()).identity,
    mailKey: await MailKey.generate(),
  };
}

const alice = await party("alice");
const bob = await party("bob");
const mallory = await party("mallory");

function content(text: string): MailContent {
  return {
    from: "alice",
    to: "bob",
    msgId: crypto.randomUUID(),
    ts: Date.UTC(2030, 0, 2, 3, 4, 5),
    text,
  };
}

/** Opens `sealed` as bob, with the envelope of `c`, checking alice's signature. */
function openAsBob(sealed: string, c: MailContent, envelope: Partial<MailContent> = {}) {
  return openMail(
    sealed,
    { user: "bob", mailKey: bob.mailKey },
    { from: c.from, msgId: c.msgId, ts: c.ts, ...envelope },
    alice.identity.publicKey,
  );
}

/** A text of exactly `length` UTF-16 units cycling through `alphabet` (no split pairs). */
function textOf(alphabet: string[], length: number): string {
  let text = "";
  for (let i = 0; text.length < length; i++) {
    const next = alphabet[i % alphabet.length]!;
    text += text.length + next.length <= length ? next : "x";
  }
  return text;
}

Deno.test("sealMail() and openMail() round-trip a message", async () => {
  const c = content("hello bob, this is private");
  const sealed = await sealMail(c, alice.identity, bob.mailKey.publicKey);
  assert.ok(Sealed.safeParse(sealed).success, "the sealed form passes the wire schema");
  assert.ok(!sealed.includes("private"));
  assert.deepEqual(await openAsBob(sealed, c), c);
});

Deno.test("sealMail() and openMail() round-trip a 64 Ki-character text with control characters and emoji", async () => {
  const controls = Array.from({ length: 32 }, (_, i) => String.fromCharCode(i));
  const alphabet = [...controls, "\u007f", "😀", "👩‍💻", '"', "\\", "é", "\u2028", "a"];
  const c = content(textOf(alphabet, MAX_TEXT_LENGTH));
  assert.equal(c.text.length, MAX_TEXT_LENGTH);
  const sealed = await sealMail(c, alice.identity, bob.mailKey.publicKey);
  assert.ok(sealed.length <= MAX_SEALED_LENGTH);
  assert.deepEqual(await openAsBob(sealed, c), c);
});

Deno.test("a sealed maximal text stays under MAX_SEALED_LENGTH, even one that escapes worst", async () => {
  // A control character is 6 bytes as JSON (\u0001): the largest payload per character.
  for (const unit of ["\u0001", "😀", '"', "a"]) {
    const c = content(textOf([unit], MAX_TEXT_LENGTH));
    const sealed = await sealMail(c, alice.identity, bob.mailKey.publicKey);
    assert.ok(
      sealed.length < MAX_SEALED_LENGTH,
      `${JSON.stringify(unit)}: ${sealed.length} >= ${MAX_SEALED_LENGTH}`,
    );
    assert.ok(Sealed.safeParse(sealed).success);
    assert.equal((await openAsBob(sealed, c)).text, c.text);
  }
});

Deno.test("openMail() rejects a message sealed to another mail key", async () => {
  const c = content("for bob only");
  const sealed = await sealMail(c, alice.identity, mallory.mailKey.publicKey);
  await assert.rejects(openAsBob(sealed, c), MailRejected);
  const toBob = await sealMail(c, alice.identity, bob.mailKey.publicKey);
  await assert.rejects(
    openMail(toBob, { user: "bob", mailKey: mallory.mailKey }, c, alice.identity.publicKey),
    MailRejected,
  );
});

Deno.test("openMail() rejects a sealed message with any one bit flipped", async () => {
  const c = content("do not touch");
  const bytes = fromBase64Url(await sealMail(c, alice.identity, bob.mailKey.publicKey));
  // The ephemeral key, the header's tag, the body's ciphertext and the body's tag.
  for (const at of [0, 31, 40, 48, 60, bytes.length - 1]) {
    const tampered = bytes.slice();
    tampered[at] = tampered[at]! ^ 0x04;
    await assert.rejects(openAsBob(toBase64Url(tampered), c), MailRejected, `bit at ${at}`);
  }
  await assert.rejects(
    openAsBob(toBase64Url(bytes.subarray(0, bytes.length - 1)), c),
    MailRejected,
  );
  await assert.rejects(openAsBob(toBase64Url(bytes.subarray(0, 48)), c), MailRejected);
  await assert.rejects(openAsBob("not base64url!", c), MailRejected);
});

Deno.test("openMail() rejects a message signed by another identity than the sender's", async () => {
  // Mallory knows bob's mail key (it is public) and writes as alice.
  const c = content("this is alice, honest");
  const forged = await sealMail(c, mallory.identity, bob.mailKey.publicKey);
  await assert.rejects(openAsBob(forged, c), /not signed by alice/);
  await assert.rejects(openAsBob(forged, c), MailRejected);
});

Deno.test("openMail() rejects a message whose envelope differs from what was sealed", async () => {
  const c = content("meet at noon");
  const sealed = await sealMail(c, alice.identity, bob.mailKey.publicKey);
  const mismatches: Partial<MailContent>[] = [
    { msgId: crypto.randomUUID() },
    { ts: c.ts + 1 },
    { from: "mallory" },
  ];
  for (const envelope of mismatches) {
    await assert.rejects(openAsBob(sealed, c, envelope), /envelope/, JSON.stringify(envelope));
  }
  // Sealed for carol (with bob's key): bob is not the recipient alice signed for.
  const forCarol = await sealMail({ ...c, to: "carol" }, alice.identity, bob.mailKey.publicKey);
  await assert.rejects(openAsBob(forCarol, c), MailRejected);
  // The sender's name is compared without regard to case, as names are unique that way.
  assert.equal((await openAsBob(sealed, c, { from: "Alice" })).text, c.text);
});

Deno.test("openMail() still opens mail that protocol version 3 sealed with AESGCM, and only when it authenticates", async () => {
  const path = new URL("./fixtures/sealed-mail-v3.json", import.meta.url);
  const fixture = JSON.parse(await Deno.readTextFile(path)) as {
    senderIdentityKey: string;
    recipientMailKey: string;
    content: MailContent;
    sealed: string;
  };
  const me = { user: "bob", mailKey: await MailKey.fromPrivate(fixture.recipientMailKey) };
  const c = fixture.content;
  const envelope = { from: c.from, msgId: c.msgId, ts: c.ts };
  assert.deepEqual(
    await openMail(fixture.sealed, me, envelope, fixture.senderIdentityKey),
    c,
  );
  // Any bit flipped in the old header or body is refused, as for new mail.
  const bytes = fromBase64Url(fixture.sealed);
  for (const bit of [0, 40 * 8, 47 * 8 + 7, 48 * 8, bytes.length * 8 - 1]) {
    const tampered = bytes.slice();
    tampered[bit >> 3]! ^= 1 << (bit & 7);
    await assert.rejects(
      openMail(toBase64Url(tampered), me, envelope, fixture.senderIdentityKey),
      (e: unknown) => e instanceof MailRejected && /cannot decrypt it/.test(e.message),
    );
  }
  // New mail is sealed with ChaChaPoly: its header authenticates under that suite only.
  const fresh = fromBase64Url(
    await sealMail(content("new"), alice.identity, bob.mailKey.publicKey),
  );
  const header = (cipher: "ChaChaPoly" | "AESGCM") =>
    HandshakeState.initialize({
      pattern: "N",
      initiator: false,
      prologue: new TextEncoder().encode("confab-mail-v1"),
      staticKeyPair: bob.mailKey.pair,
      cipher,
    }).then((hs) => hs.readMessage(fresh.subarray(0, 48)));
  await header("ChaChaPoly");
  await assert.rejects(header("AESGCM"), /failed authentication/);
});
