/**
 * Unit tests for lib/peer/sealed_mail.ts: offline mail sealed to the recipient's mail key and
 * signed by the sender, opened and checked against the envelope the server delivers.
 */
import assert from "node:assert/strict";
import { HandshakeState } from "../../lib/crypto/noise.ts";
import { closeFrame } from "../../lib/net/sealed_frames.ts";
import { Identity } from "../../lib/peer/identity.ts";
import {
  BURST_MAX_AGE_MS,
  type MailContent,
  MailKey,
  MailOpener,
  MailRejected,
  MailSealer,
  openMail,
  sealMail,
} from "../../lib/peer/sealed_mail.ts";
import { MAX_SEALED_LENGTH, MAX_TEXT_LENGTH, Sealed } from "../../lib/protocol/messages.ts";
import { fromBase64Url, toBase64Url } from "../../lib/util/base64.ts";

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
async function openAsBob(
  sealed: string,
  c: MailContent,
  envelope: Partial<MailContent> = {},
): Promise<MailContent> {
  const { place: _, ...opened } = await openMail(
    sealed,
    { user: "bob", mailKey: bob.mailKey },
    { from: c.from, msgId: c.msgId, ts: c.ts, ...envelope },
    alice.identity.publicKey,
  );
  return opened;
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

/** A message sealed by an older version, as that version left it (tests/fixtures). */
async function sealedFixture(name: string): Promise<{
  senderIdentityKey: string;
  recipientMailKey: string;
  content: MailContent;
  sealed: string;
}> {
  return JSON.parse(await Deno.readTextFile(new URL(`../fixtures/${name}`, import.meta.url)));
}

Deno.test("openMail() still opens mail that protocol version 3 sealed with AESGCM, and only when it authenticates", async () => {
  const fixture = await sealedFixture("sealed-mail-v3.json");
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
});

Deno.test("openMail() still opens mail that protocol version 5 sealed alone, and only when it authenticates", async () => {
  const fixture = await sealedFixture("sealed-mail-v5.json");
  const me = { user: "bob", mailKey: await MailKey.fromPrivate(fixture.recipientMailKey) };
  const c = fixture.content;
  const envelope = { from: c.from, msgId: c.msgId, ts: c.ts };
  const opener = new MailOpener(me);
  const opened = await opener.open(fixture.sealed, envelope, fixture.senderIdentityKey);
  assert.deepEqual(opened, c, "no place in a burst: it was sealed alone");
  const bytes = fromBase64Url(fixture.sealed);
  for (const bit of [0, 40 * 8, 48 * 8, bytes.length * 8 - 1]) {
    const tampered = bytes.slice();
    tampered[bit >> 3]! ^= 1 << (bit & 7);
    await assert.rejects(
      opener.open(toBase64Url(tampered), envelope, fixture.senderIdentityKey),
      MailRejected,
    );
  }
  await assert.rejects(
    opener.open(
      fixture.sealed,
      { ...envelope, msgId: crypto.randomUUID() },
      fixture.senderIdentityKey,
    ),
    /envelope/,
  );
  // New mail is never sealed alone: it begins with the burst prefix.
  assert.ok(
    (await sealMail(content("new"), alice.identity, bob.mailKey.publicKey)).startsWith("CfMB"),
  );
});

Deno.test("openMail() refuses a message alone whose sealed content is valid JSON but no object", async () => {
  // Anyone who knows bob's public mail key can seal to it (Noise N), whatever they seal.
  for (const json of ["null", "42", "[1,2]", '"text"', "true"]) {
    const hs = await HandshakeState.initialize({
      pattern: "N",
      initiator: true,
      prologue: new TextEncoder().encode("confab-mail-v1"),
      remoteStaticKey: fromBase64Url(bob.mailKey.publicKey),
    });
    const header = await hs.writeMessage();
    const body = closeFrame(hs.session().send, new TextEncoder().encode(json));
    const sealed = new Uint8Array(header.length + body.length);
    sealed.set(header);
    sealed.set(body, header.length);
    await assert.rejects(
      openMail(
        toBase64Url(sealed),
        { user: "bob", mailKey: bob.mailKey },
        { from: "alice", msgId: crypto.randomUUID(), ts: Date.now() },
        alice.identity.publicKey,
      ),
      (error) => error instanceof MailRejected && /content is not valid/.test(error.message),
      json,
    );
  }
});

/** An identity that counts its signatures. */
function counting(identity: Identity): { identity: Identity; signatures: () => number } {
  let n = 0;
  const counted = Object.create(identity) as Identity;
  counted.sign = (data) => {
    n++;
    return identity.sign(data);
  };
  return { identity: counted, signatures: () => n };
}

Deno.test("MailSealer seals a burst under one header and one signature, numbered in order", async () => {
  const { identity, signatures } = counting(alice.identity);
  const sealer = new MailSealer(identity);
  const messages = Array.from({ length: 20 }, (_, i) => content(`message ${i}`));
  const sealed = await Promise.all(messages.map((c) => sealer.seal(c, bob.mailKey.publicKey)));
  assert.equal(signatures(), 1, "one signature for the burst");
  const headers = new Set(sealed.map((s) => s.slice(0, 144)));
  assert.equal(headers.size, 1, "one header");
  const opener = new MailOpener({ user: "bob", mailKey: bob.mailKey });
  const opened = await Promise.all(
    sealed.map((s, i) =>
      opener.open(
        s,
        { from: "alice", msgId: messages[i]!.msgId, ts: messages[i]!.ts },
        alice.identity.publicKey,
      )
    ),
  );
  assert.deepEqual(opened.map((o) => o.text), messages.map((m) => m.text));
  assert.deepEqual(opened.map((o) => o.place?.seq), messages.map((_, i) => i));
  // Another recipient gets another burst.
  await sealer.seal({ ...content("to carol"), to: "carol" }, mallory.mailKey.publicKey);
  assert.equal(signatures(), 2);
});

Deno.test("MailSealer starts a new burst after a minute or when the numbers are used up", async () => {
  let now = Date.UTC(2030, 0, 1);
  const { identity, signatures } = counting(alice.identity);
  const sealer = new MailSealer(identity, { now: () => now });
  const first = await sealer.seal(content("one"), bob.mailKey.publicKey);
  now += BURST_MAX_AGE_MS - 1;
  const second = await sealer.seal(content("two"), bob.mailKey.publicKey);
  assert.equal(second.slice(0, 144), first.slice(0, 144));
  now += 1;
  const third = await sealer.seal(content("three"), bob.mailKey.publicKey);
  assert.notEqual(third.slice(0, 144), first.slice(0, 144), "a new burst after a minute");
  assert.equal(signatures(), 2);
  const c = content("four");
  assert.equal(
    (await openAsBobPlaced(await sealer.seal(c, bob.mailKey.publicKey), c)).place?.seq,
    1,
  );
  // At most three messages a burst: the fourth begins the next, numbered from 0 again.
  const short = new MailSealer(alice.identity, { maxMessages: 3 });
  const burst = await Promise.all(
    [0, 1, 2, 3].map(() => short.seal(content("x"), bob.mailKey.publicKey)),
  );
  assert.equal(new Set(burst.slice(0, 3).map((s) => s.slice(0, 144))).size, 1);
  assert.notEqual(burst[3]!.slice(0, 144), burst[0]!.slice(0, 144));
  assert.equal(new DataView(fromBase64Url(burst[3]!).buffer).getUint32(108), 0);
});

/** Opens as bob and keeps the message's place in its burst. */
function openAsBobPlaced(sealed: string, c: MailContent) {
  return openMail(
    sealed,
    { user: "bob", mailKey: bob.mailKey },
    { from: c.from, msgId: c.msgId, ts: c.ts },
    alice.identity.publicKey,
  );
}

Deno.test("a message moved into another burst, renumbered or given another's envelope is refused", async () => {
  const sealer = new MailSealer(alice.identity);
  const [a, b] = [content("first"), content("second")];
  const burst1 = [
    await sealer.seal(a, bob.mailKey.publicKey),
    await sealer.seal(b, bob.mailKey.publicKey),
  ];
  const other = await new MailSealer(alice.identity).seal(
    content("elsewhere"),
    bob.mailKey.publicKey,
  );
  const header2 = other.slice(0, 144);
  assert.notEqual(header2, burst1[0]!.slice(0, 144));
  // Under the other burst's header (a genuine one of alice's): its key does not open it.
  await assert.rejects(openAsBob(header2 + burst1[1]!.slice(144), b), MailRejected);
  // Its number changed (the server putting it earlier in the burst): the nonce no longer fits.
  const bytes = fromBase64Url(burst1[1]!);
  for (const seq of [0, 2, 0x1_0001]) {
    const renumbered = bytes.slice();
    new DataView(renumbered.buffer).setUint32(108, seq);
    await assert.rejects(openAsBob(toBase64Url(renumbered), b), MailRejected, `seq ${seq}`);
  }
  // The two messages' envelopes swapped: each is refused.
  await assert.rejects(openAsBob(burst1[0]!, b, { msgId: b.msgId, ts: b.ts }), /envelope/);
  await assert.rejects(openAsBob(burst1[1]!, a, { msgId: a.msgId, ts: a.ts }), /envelope/);
  // Any bit of the header, the number or the ciphertext flipped.
  for (const at of [3, 4, 35, 36, 43, 44, 107, 108, 111, 112, bytes.length - 1]) {
    const tampered = bytes.slice();
    tampered[at]! ^= 0x10;
    await assert.rejects(openAsBob(toBase64Url(tampered), b), MailRejected, `byte ${at}`);
  }
  // Untouched, both open, in their places.
  assert.equal((await openAsBobPlaced(burst1[0]!, a)).place?.seq, 0);
  assert.equal((await openAsBobPlaced(burst1[1]!, b)).place?.seq, 1);
});

Deno.test("a burst signed for another recipient or by another sender is refused, whoever holds the mail key", async () => {
  // Alice's burst to carol, sealed with bob's mail key (a server swapping keys): not for bob.
  const toCarol = await new MailSealer(alice.identity).seal(
    { ...content("carol?"), to: "carol" },
    bob.mailKey.publicKey,
  );
  await assert.rejects(openAsBob(toCarol, content("carol?")), MailRejected);
  // Mallory's burst presented as alice's.
  const c = content("from alice, really");
  const forged = await new MailSealer(mallory.identity).seal(c, bob.mailKey.publicKey);
  await assert.rejects(openAsBob(forged, c), /not signed by alice/);
  // Alice's genuine burst to bob, delivered as mallory's (the server lying about the sender).
  const genuine = await new MailSealer(alice.identity).seal(c, bob.mailKey.publicKey);
  await assert.rejects(
    openMail(genuine, { user: "bob", mailKey: bob.mailKey }, {
      from: "mallory",
      msgId: c.msgId,
      ts: c.ts,
    }, alice.identity.publicKey),
    MailRejected,
  );
});
