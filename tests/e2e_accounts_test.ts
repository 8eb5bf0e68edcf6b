/**
 * Attacks on accounts, against the real server process over the real protocol (a raw
 * connection speaking it by hand): weak keys at signup, guessing bursts, signup floods and
 * probes, and what a session token is worth once used or logged out.
 */
import assert from "node:assert/strict";
import { scryptSync } from "node:crypto";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { generateKeyPair, type KeyPair } from "../lib/crypto/noise.ts";
import { SQLITE_FILE, SqliteStore } from "../lib/server/sqlite_store.ts";
import { mailKeyStatement } from "../lib/crypto/ed25519.ts";
import { MailKey } from "../lib/peer/sealed_mail.ts";
import { toBase64Url } from "../lib/util/base64.ts";
import { RawConn } from "./support/raw_conn.ts";
import { signupFields } from "./support/accounts.ts";
import { startServer, TestClient } from "./support/processes.ts";
import { sharedServer } from "./support/shared_server.ts";
import { DEFAULT_PASSWORD_COST } from "../lib/server/accounts.ts";

/** A raw, encrypted control connection to `port`. */
async function control(port: number): Promise<RawConn> {
  const raw = await RawConn.connect(port);
  await raw.hello("client");
  await raw.secure("client-server");
  return raw;
}

/** The scenarios that neither throttle 127.0.0.1, need flags, nor read the database. */
const shared = sharedServer("accounts: scenarios on one server");

shared.test("a signup with a small-order identity key (the all-zero key) is refused", async ({ server, user }) => {
  await using raw = await control(server.port);
  // With the all-zero key, the all-zero signature verifies for about a quarter of all
  // statements: try mail keys until one "verifies", as an attacker would.
  const zeroKey = await crypto.subtle.importKey(
    "raw",
    new Uint8Array(32),
    { name: "Ed25519" },
    false,
    ["verify"],
  );
  const zeroSig = new Uint8Array(64);
  let mailKey = "";
  for (let i = 0; i < 200 && !mailKey; i++) {
    const candidate = (await MailKey.generate()).publicKey;
    const statement = mailKeyStatement(user("mallory"), candidate);
    if (await crypto.subtle.verify("Ed25519", zeroKey, zeroSig, statement)) mailKey = candidate;
  }
  assert.ok(mailKey, "found a mail key the all-zero key 'signs'");
  const reply = await raw.request({
    type: "signup",
    id: 1,
    user: user("mallory"),
    password: "secret-pw",
    publicKey: toBase64Url(new Uint8Array(32)),
    mailKey,
    mailKeySig: toBase64Url(zeroSig),
  });
  assert.equal(reply.type, "error", JSON.stringify(reply));
  assert.equal(reply.code, "BAD_MESSAGE");
  assert.match(String(reply.message), /identity key/);
  // A real key still signs up.
  assert.deepEqual(await raw.request({ ...await signupFields(user("alice")), id: 2 }), {
    type: "ok",
    id: 2,
  });
});

/** Sends `message` on a fresh connection of its own; the answer. */
async function alone(port: number, message: { type: string; [k: string]: unknown }) {
  await using raw = await control(port);
  return await raw.request({ ...message, id: 1 });
}

Deno.test("a burst of concurrent login guesses gets no more checks than the free failures", async () => {
  await using server = await startServer();
  assert.equal((await alone(server.port, await signupFields("alice"))).type, "ok");
  // Twelve guesses at once, each on its own connection (one connection is served in order).
  const answers = await Promise.all(
    Array.from({ length: 12 }, (_, i) =>
      alone(server.port, {
        type: "login",
        user: "alice",
        password: `guess-${i}`,
        peerPort: 5555,
      })),
  );
  const codes = answers.map((a) => String(a.code));
  const checked = codes.filter((c) => c === "LOGIN_FAILED").length;
  assert.ok(checked <= 5, `${checked} of 12 concurrent guesses were checked: ${codes}`);
  assert.deepEqual(
    codes.filter((c) => c !== "LOGIN_FAILED" && c !== "TOO_MANY_ATTEMPTS"),
    [],
  );
  // The same from one address against many names: no more than the address's free failures.
  const spread = await Promise.all(
    Array.from(
      { length: 30 },
      (_, i) =>
        alone(server.port, {
          type: "login",
          user: `nobody${i}`,
          password: "guess",
          peerPort: 5555,
        }),
    ),
  );
  const spreadChecked = spread.filter((a) => a.code === "LOGIN_FAILED").length;
  assert.ok(spreadChecked <= 20, `${spreadChecked} of 30 guesses from one address were checked`);
});

Deno.test("signups from one address are rate limited", async () => {
  await using server = await startServer({ args: ["--max-signups-per-hour", "3"] });
  await using raw = await control(server.port);
  const codes: string[] = [];
  for (let i = 0; i < 5; i++) {
    const reply = await raw.request({ ...await signupFields(`user${i}`), id: i + 1 });
    codes.push(reply.type === "ok" ? "ok" : String(reply.code));
  }
  assert.deepEqual(codes, ["ok", "ok", "ok", "TOO_MANY_ATTEMPTS", "TOO_MANY_ATTEMPTS"]);
  const refused = await raw.request({ ...await signupFields("user9"), id: 9 });
  assert.match(String(refused.message), /too many signups from .*; try again in \d+ min/);
});

// Its own server: it needs a password cost of its own.
Deno.test("probing for taken names through signup is checked first, throttled, and as slow as a signup", async () => {
  // At the suite's cheap cost (CONFAB_PASSWORD_COST=10) a hash is about a millisecond, less than
  // the commit of a new account and the machine's noise: a hash must be what is measured.
  await using server = await startServer({ args: ["--password-cost", "14"] });
  const user = (name: string) => name;
  await using raw = await control(server.port);
  let id = 0;
  const ask = async (message: { type: string; [k: string]: unknown }) => {
    const started = performance.now();
    const reply = await raw.request({ ...message, id: ++id });
    return { reply, ms: performance.now() - started };
  };
  const made = await ask(await signupFields(user("alice")));
  assert.equal(made.reply.type, "ok");
  // A request that is not a valid signup gets no answer about the name.
  const forged = await ask({ ...await signupFields(user("alice")), mailKeySig: "A".repeat(86) });
  assert.equal(forged.reply.code, "BAD_MESSAGE", JSON.stringify(forged.reply));
  // A taken name costs as much as a new account: a password hash each time.
  const fresh: number[] = [made.ms];
  const taken: number[] = [];
  for (let i = 0; i < 3; i++) {
    const exists = await ask(await signupFields(user("alice")));
    assert.equal(exists.reply.code, "USER_EXISTS");
    taken.push(exists.ms);
    const created = await ask(await signupFields(user(`fresh${i}`)));
    assert.equal(created.reply.type, "ok");
    fresh.push(created.ms);
  }
  const median = (xs: number[]) => xs.sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
  assert.ok(
    median(taken) >= 0.3 * median(fresh),
    `USER_EXISTS took ${median(taken).toFixed(1)} ms, a signup ${median(fresh).toFixed(1)} ms`,
  );
});

Deno.test("a password hashed with the old scrypt cost (N=2^15) is rehashed at N=2^17 at the next login", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "confab-srv-" });
  try {
    // An account as an older build left it: scrypt N=2^15, r=8, p=1, no parameters stored.
    const salt = crypto.getRandomValues(new Uint8Array(16));
    const old = new Uint8Array(
      scryptSync("old-secret".normalize("NFC"), salt, 32, {
        N: 1 << 15,
        r: 8,
        p: 1,
        maxmem: 64 * 1024 * 1024,
      }),
    );
    const fields = await signupFields("alice");
    {
      await using store = new SqliteStore(dataDir);
      assert.equal(
        await store.createUser({ name: "alice", salt, hash: old, publicKey: fields.publicKey }),
        true,
      );
    }
    const login = async () => {
      // The default cost explicitly: the suite runs its servers cheaper (CONFAB_PASSWORD_COST).
      await using server = await startServer({
        dataDir,
        args: ["--password-cost", String(DEFAULT_PASSWORD_COST)],
      });
      const reply = await alone(server.port, {
        type: "login",
        user: "alice",
        password: "old-secret",
        peerPort: 5555,
      });
      assert.equal(reply.type, "welcome", JSON.stringify(reply));
      assert.equal((await server.esc()).code, 0);
    };
    await login();
    {
      await using store = new SqliteStore(dataDir);
      const user = await store.getUser("alice");
      assert.equal(user?.kdf, "scrypt:17:8:1");
      assert.notDeepEqual(user?.hash, old);
      assert.notDeepEqual(user?.salt, salt, "a fresh salt");
    }
    await login(); // the new hash works
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("a server started with --password-cost hashes new accounts at that cost and says it is below the default", async () => {
  await using server = await startServer({ args: ["--password-cost", "11"] });
  await server.proc.out.waitFor(
    (l) => l.includes("scrypt N=2^11, below the recommended"),
    "notice",
  );
  assert.equal((await alone(server.port, await signupFields("carol"))).type, "ok");
  assert.equal((await server.esc()).code, 0);
  await using store = new SqliteStore(server.dataDir);
  assert.equal((await store.getUser("carol"))?.kdf, "scrypt:11:8:1");
});

// ---- session tokens ------------------------------------------------------------------------

/** A raw control connection whose Noise static key is `key` (a client process keeps one). */
async function controlAs(port: number, key: KeyPair): Promise<RawConn> {
  const raw = await RawConn.connect(port);
  await raw.hello("client");
  await raw.secure("client-server", key);
  return raw;
}

/** Resumes with `token` from a client with static key `key`; the answer. */
async function resumeAs(port: number, key: KeyPair, token: unknown) {
  await using raw = await controlAs(port, key);
  return await raw.request({ type: "resume", id: 1, token, peerPort: 5555 });
}

/** Signs `user` up and logs in from a client with static key `key`; the session token. */
async function loggedIn(port: number, key: KeyPair, user = "alice"): Promise<string> {
  assert.equal((await alone(port, await signupFields(user))).type, "ok");
  await using raw = await controlAs(port, key);
  const welcome = await raw.request({
    type: "login",
    id: 1,
    user,
    password: "secret-pw",
    peerPort: 5555,
  });
  assert.equal(welcome.type, "welcome", JSON.stringify(welcome));
  return String(welcome.token);
}

shared.test("a session token presented from another client key is refused (tokens are bound to the client that logged in)", async ({ server, user }) => {
  const client = await generateKeyPair();
  const token = await loggedIn(server.port, client, user("alice"));
  const thief = await resumeAs(server.port, await generateKeyPair(), token);
  assert.equal(thief.code, "BAD_TOKEN", JSON.stringify(thief));
  assert.equal((await resumeAs(server.port, client, token)).type, "welcome");
});

shared.test("a session token is rotated at every resume: an older one cannot be replayed", async ({ server, user }) => {
  const client = await generateKeyPair();
  const t1 = await loggedIn(server.port, client, user("alice"));
  const r2 = await resumeAs(server.port, client, t1);
  assert.equal(r2.type, "welcome");
  const t2 = String(r2.token);
  assert.notEqual(t2, t1, "a new token at resume");
  const r3 = await resumeAs(server.port, client, t2);
  assert.equal(r3.type, "welcome");
  assert.notEqual(String(r3.token), t2);
  // Once its successor was used, a token is dead.
  assert.equal((await resumeAs(server.port, client, t1)).code, "BAD_TOKEN");
});

shared.test("logout revokes the session token, and the one it replaced", async ({ server, user }) => {
  const client = await generateKeyPair();
  const t1 = await loggedIn(server.port, client, user("alice"));
  await using raw = await controlAs(server.port, client);
  const resumed = await raw.request({ type: "resume", id: 1, token: t1, peerPort: 5555 });
  assert.equal(resumed.type, "welcome");
  assert.equal((await raw.request({ type: "logout", id: 2 })).type, "ok");
  assert.equal((await resumeAs(server.port, client, resumed.token)).code, "BAD_TOKEN");
  assert.equal((await resumeAs(server.port, client, t1)).code, "BAD_TOKEN");
});

Deno.test("expired session rows are purged from the database", async () => {
  const dataDir = await Deno.makeTempDir({ prefix: "confab-srv-" });
  try {
    {
      await using store = new SqliteStore(dataDir);
      const fields = await signupFields("alice");
      await store.createUser({
        name: "alice",
        salt: new Uint8Array(16),
        hash: new Uint8Array(32),
        publicKey: fields.publicKey,
      });
      // Logged in a year ago and never again.
      await store.saveSession(new Uint8Array(32).fill(7), "alice", {
        now: Date.now() - 365 * 24 * 3600_000,
      });
    }
    await using _server = await startServer({ dataDir });
    const db = new DatabaseSync(join(dataDir, SQLITE_FILE), { readOnly: true });
    try {
      const { n } = db.prepare("SELECT count(*) AS n FROM sessions").get() as { n: number };
      assert.equal(n, 0, "the expired session is still stored");
    } finally {
      db.close();
    }
  } finally {
    await Deno.remove(dataDir, { recursive: true });
  }
});

Deno.test("a login whose client leaves while the password is checked puts nobody online and keeps the earlier session", async () => {
  // The default cost: the check must outlast a ping and a close (the suite's cost is ≈ 5 ms).
  await using server = await startServer({
    args: ["--password-cost", String(DEFAULT_PASSWORD_COST)],
  });
  const device = await generateKeyPair();
  const token = await loggedIn(server.port, device); // alice, on a connection closed since
  await server.proc.out.waitFor((l) => l.includes("offline: alice"), "alice offline");
  // Another client sends the right password and is gone before the (slow) check is over.
  const raw = await controlAs(server.port, await generateKeyPair());
  await raw.send({ type: "login", id: 1, user: "alice", password: "secret-pw", peerPort: 5555 });
  // The connection answers a ping at once, after the login before it was taken up.
  assert.equal((await raw.request({ type: "ping", id: 2 })).type, "pong");
  await raw.close();
  await server.proc.out.waitFor(
    (l) => /login: alice from .*: the client left before it was done/.test(l),
    "the abandoned login",
  );
  await server.proc.write("list");
  await server.proc.out.waitFor((l) => l.includes("no users online"), "nobody online");
  // Nothing answered into the void as an "internal error", and the first device's session
  // was not ended by a login that never happened.
  assert.equal((await resumeAs(server.port, device, token)).type, "welcome");
  assert.deepEqual(server.proc.out.lines.filter((l) => l.includes("internal error")), []);
});

Deno.test("password changes the password once the current one is proved; the old one stops working", async () => {
  await using server = await startServer();
  await using alice = await TestClient.start("alice", server);
  await alice.signup("alice", "secret-pw");
  // Refused before anything changes: a wrong current password (the server's answer), a new
  // one too short or the same as the current (the client's), none to ask for on --json.
  await alice.send("password wrong-pw newer-secret");
  await alice.event("error", { code: "LOGIN_FAILED" });
  await alice.send("password secret-pw short");
  await alice.event("error", { code: "BAD_PASSWORD" });
  await alice.send("password secret-pw secret-pw");
  await alice.event("error", { code: "BAD_PASSWORD" });
  await alice.send("password");
  await alice.event("error", { code: "PASSWORD_REQUIRED" });
  await alice.send("password secret-pw newer-secret");
  await alice.event("password_changed", { user: "alice" });
  // The session goes on; the next login needs the new password.
  await alice.send("contacts");
  await alice.event("contacts");
  await alice.send("out");
  await alice.event("logged_out", { user: "alice" });
  await alice.send("in alice secret-pw");
  await alice.event("error", { code: "LOGIN_FAILED" });
  await alice.login("alice", "newer-secret");
});

Deno.test("guesses at the current password through password_change are throttled as logins are", async () => {
  await using server = await startServer();
  await using raw = await control(server.port);
  assert.equal((await raw.request({ ...await signupFields("alice"), id: 1 })).type, "ok");
  const login = { type: "login", id: 2, user: "alice", password: "secret-pw", peerPort: 5555 };
  assert.equal((await raw.request(login)).type, "welcome");
  // Eight guesses pipelined on the session: one connection is served in order, so the sixth
  // comes right behind the fifth failure, inside the wait it starts.
  const ids = Array.from({ length: 8 }, (_, i) => 10 + i);
  for (const id of ids) {
    await raw.send({
      type: "password_change",
      id,
      password: `guess-${id}`,
      newPassword: "x-secret",
    });
  }
  const codes: string[] = [];
  for (const id of ids) {
    codes.push(String((await raw.next()).code ?? `id ${id}`));
  }
  assert.deepEqual(codes.slice(0, 5), Array(5).fill("LOGIN_FAILED"), codes.join());
  assert.ok(codes.slice(5).every((c) => c === "TOO_MANY_ATTEMPTS"), codes.join());
  // The password is the one it was, once the throttle's wait (1 s after the fifth) is over.
  await using again = await control(server.port);
  const deadline = Date.now() + 20_000;
  for (let id = 1;; id++) {
    const reply = await again.request({ ...login, id });
    if (reply.code !== "TOO_MANY_ATTEMPTS" || Date.now() > deadline) {
      assert.equal(reply.type, "welcome", JSON.stringify(reply));
      break;
    }
    await new Promise((resolve) => setTimeout(resolve, 200)); // polled, with the deadline above
  }
});
