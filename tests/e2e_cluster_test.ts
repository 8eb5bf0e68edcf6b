/**
 * Several server instances over one PostgreSQL database, end to end with real processes: users
 * on different instances chat, mail and read each other as on one server; one session per user
 * across the cluster; an instance killed outright loses nobody's mail and its users re-attach
 * to another; the database restarting under load loses no mail.
 */
import assert from "node:assert/strict";
import { chatting, leaveAndLogOut, signUpAsContacts, startCluster } from "./support/cluster.ts";
import { crowd, disposeAll, groupOf } from "./support/groups.ts";
import { type Event, startServer, TestClient } from "./support/processes.ts";
import { RawConn } from "./support/raw_conn.ts";
import { testPostgres, useOwnPostgres } from "./support/store_backends.ts";
import { generateKeyPair } from "../lib/crypto/noise.ts";

// Tests here stop and start their PostgreSQL cluster: not one that other test files share.
useOwnPostgres();

/** `history <chat>` as texts, oldest first. */
async function historyOf(client: TestClient, chat: string): Promise<string[]> {
  await client.send(`history ${chat}`);
  const entries = (await client.event("history", { chat })).entries as Event[];
  return entries.map((h) => String(h.text));
}

/** Sends `text` in the open chat and waits until it is stored on the server (`*`). */
async function sendStored(client: TestClient, text: string): Promise<void> {
  await client.send(text);
  const sent = await client.event("sent", { text });
  await client.event("stored", { id: sent.id });
}

Deno.test("alice on one instance and bob on another: presence, chat, mail, notices, receipts", async () => {
  await using cluster = await startCluster(2);
  const [a, b] = cluster.servers as [typeof cluster.servers[0], typeof cluster.servers[0]];
  const bobHome = await Deno.makeTempDir({ prefix: "confab-bob-" });
  try {
    await using alice = await TestClient.start("alice", a);
    {
      await using bob = await TestClient.start("bob", b, { home: bobHome });
      await signUpAsContacts(alice, bob);
      // The directory is the cluster's: each sees the other online, with an address.
      await alice.send("contacts");
      const list = await alice.event("contacts");
      assert.deepEqual(list.contacts, [{ user: "bob", online: true }]);
      await chatting(alice, bob);
      await alice.send("hello across instances");
      await bob.event("message", { from: "alice", text: "hello across instances" });
      await alice.event("delivered", { to: "bob" });
      // Presence crosses instances too: bob leaves, alice (on the other one) is told.
      await leaveAndLogOut(bob);
      await alice.event("presence", { user: "bob", online: false });
    }
    // Mail for bob, stored through alice's instance.
    await sendStored(alice, "while you were away 1");
    await sendStored(alice, "while you were away 2");
    await using bob = await TestClient.start("bob", b, { home: bobHome });
    await bob.login("bob");
    await alice.event("presence", { user: "bob", online: true });
    const summary = await bob.event("mail_summary");
    assert.deepEqual(summary.entries, [
      { from: "alice", count: 2, newest: (summary.entries as { newest: number }[])[0]!.newest },
    ]);
    // A notice pushed across instances: bob is busy in a chat with carol when alice writes.
    await bob.send("show alice");
    await bob.event("message", { from: "alice", text: "while you were away 1" });
    await bob.event("message", { from: "alice", text: "while you were away 2" });
    await bob.event("shown", { from: "alice", count: 2 });
    // The read receipts reach alice, on the other instance, at once.
    const read = await alice.event("read", { by: "bob" });
    assert.ok(read);
    assert.deepEqual(await historyOf(bob, "alice"), [
      "hello across instances",
      "while you were away 1",
      "while you were away 2",
    ]);
  } finally {
    await Deno.remove(bobHome, { recursive: true });
  }
});

Deno.test("a group with members on two instances", async () => {
  await using cluster = await startCluster(2);
  const [a, b] = cluster.servers as [typeof cluster.servers[0], typeof cluster.servers[0]];
  const on = (s: typeof a) => ({ args: ["--server", s.address] });
  const clients = await crowd(a, ["alice", "bob", "carol"], { bob: on(b), carol: on(a) });
  const [alice, bob, carol] = clients as [TestClient, TestClient, TestClient];
  try {
    await groupOf(clients);
    await alice.send("to everyone");
    await bob.event("message", { from: "alice", text: "to everyone" });
    await carol.event("message", { from: "alice", text: "to everyone" });
  } finally {
    await disposeAll(clients);
  }
});

Deno.test("one session per user across the cluster; list shows everyone with their instance", async () => {
  await using cluster = await startCluster(2);
  const [a, b] = cluster.servers as [typeof cluster.servers[0], typeof cluster.servers[0]];
  await using first = await TestClient.start("alice", a);
  await first.signup("alice");
  await a.proc.write("list");
  await a.proc.out.find(
    (l) => /^alice\*\d\d:\d\d:\d\d\*\d+\*127\.0\.0\.1:\d+$/.test(l),
    "alice listed",
  );
  // The same account logs in on the other instance, from another device (a copy of her home).
  const copy = await Deno.makeTempDir({ prefix: "confab-alice2-" });
  await new Deno.Command("cp", { args: ["-a", `${first.home}/.`, copy] }).output();
  await using second = await TestClient.start("alice2", b, { home: copy });
  await second.login("alice");
  await first.event("error", { code: "SESSION_ENDED" });
  const from = b.proc.out.lines.length;
  await b.proc.write("list");
  const line = await b.proc.out.findFrom(from, (l) => l.startsWith("alice*"), "alice listed on b");
  assert.ok(line.endsWith(`*${b.address}`), `${line} names the instance alice is on now`);
  await b.proc.write("registry alice");
  await b.proc.out.findFrom(from, (l) => /^alice\*.*\*-\*\d+$/.test(l), "an open login row");
  await Deno.remove(copy, { recursive: true });
});

Deno.test("kill -9 of alice's instance: she re-attaches to the other at once; chat and mail go on", async () => {
  await using cluster = await startCluster(2);
  const [a, b] = cluster.servers as [typeof cluster.servers[0], typeof cluster.servers[0]];
  // Alice knows both addresses (a first); bob is on b.
  await using alice = await TestClient.start("alice", a, { args: ["--server", cluster.addresses] });
  await using bob = await TestClient.start("bob", b);
  await signUpAsContacts(alice, bob);
  await chatting(alice, bob);
  await alice.send("before");
  await bob.event("message", { text: "before" });

  a.proc.kill("SIGKILL");
  const killedAt = Date.now();
  await a.proc.status;
  const back = await alice.event("server_back", {}, 10_000);
  assert.equal(back.server, b.address);
  assert.ok(Date.now() - killedAt < 10_000);
  // The direct chat never depended on the server.
  await alice.send("after");
  await bob.event("message", { text: "after" });
  await alice.event("delivered", { to: "bob" });
  // Bob leaves; what alice writes now is mailed through b, and read once.
  await leaveAndLogOut(bob);
  await alice.event("presence", { user: "bob", online: false });
  await sendStored(alice, "stored after the failover");
  await bob.send("in bob secret-pw");
  await bob.event("logged_in", { user: "bob" });
  await bob.send("show alice");
  await bob.event("message", { from: "alice", text: "stored after the failover" });
  await bob.event("shown", { from: "alice", count: 1 });
  await alice.event("read", { by: "bob" });
  const history = await historyOf(bob, "alice");
  assert.deepEqual(history, ["before", "after", "stored after the failover"], "each once");
});

Deno.test("PostgreSQL restarted under load: instances reconnect and catch up, no mail lost", async () => {
  const pg = await testPostgres();
  await using cluster = await startCluster(2);
  const [a, b] = cluster.servers as [typeof cluster.servers[0], typeof cluster.servers[0]];
  await using alice = await TestClient.start("alice", a);
  const bobHome = await Deno.makeTempDir({ prefix: "confab-bob-" });
  const texts: string[] = [];
  let recovered = false;
  try {
    {
      await using bob = await TestClient.start("bob", b, { home: bobHome });
      await signUpAsContacts(alice, bob);
    }
    await alice.send("chat bob");
    await alice.event("chat_opened", { with: "bob", online: false });
    // Mail keeps coming while the database goes down and comes back.
    const sending = (async () => {
      while (!recovered && texts.length < 400) {
        const text = `m${texts.length}`;
        texts.push(text);
        await alice.send(text);
        await alice.event("sent", { text });
      }
    })();
    sending.catch(() => {}); // a failure is reported where it is awaited, below
    await alice.event("stored", {});
    await pg.stop("fast");
    for (const s of [a, b]) {
      await s.proc.out.find((l) => l.includes("cannot reach the database"), "an outage line");
    }
    await alice.anyEvent("queued", {}, 30_000); // a message met the outage
    await pg.start();
    for (const s of [a, b]) {
      await s.proc.out.find((l) => l.includes("reachable again"), "a recovery line", 30_000);
    }
    recovered = true;
    await sending;
    // Every message ends stored on the server: those that met the outage waited in the outbox
    // and went again shortly after.
    const ids = alice.events().filter((e) => e.type === "sent").map((e) => String(e.id));
    assert.equal(ids.length, texts.length);
    for (const id of ids) await alice.anyEvent("stored", { id }, 60_000);
    await using bob = await TestClient.start("bob", b, { home: bobHome });
    await bob.login("bob");
    const shown = () =>
      bob.events().filter((e) => e.type === "message" && e.from === "alice").map((e) =>
        String(e.text)
      );
    for (let i = 0; i < 20 && shown().length < texts.length; i++) {
      await bob.send("show alice");
      await bob.event("shown", { from: "alice" });
    }
    // Each exactly once (those retried may come after later ones).
    assert.deepEqual(shown().sort(), [...texts].sort());
  } finally {
    recovered = true; // the sending loop ends, whatever happened
    await Deno.remove(bobHome, { recursive: true });
  }
});

Deno.test("an address of the same service with another key is refused, not pinned", async () => {
  // Two servers that are not one deployment: each made its own key.
  await using first = await startServer();
  await using other = await startServer();
  await using alice = await TestClient.start("alice", first, {
    args: ["--server", `${first.address},${other.address}`],
  });
  await alice.signup("alice");
  first.proc.kill("SIGKILL");
  await first.proc.status;
  const refused = await alice.event("error", { code: "SERVER_KEY_CHANGED" }, 20_000);
  assert.match(String(refused.message), /other than the one pinned for 127\.0\.0\.1:\d+/);
  const pins = JSON.parse(await Deno.readTextFile(`${alice.home}/known_servers.json`));
  assert.equal(JSON.stringify(pins).includes(other.address), false, "the impostor is not pinned");
});

Deno.test("a host name with several addresses: the client re-attaches to another of them", async () => {
  // One name, two instances on one port: the name resolves to both (in the client's own mount
  // namespace, its /etc/hosts says so; the system resolver reads it as it would read DNS).
  await using cluster = await startCluster(2, [], ["127.0.0.2", "127.0.0.3"]);
  const [a, b] = cluster.servers as [typeof cluster.servers[0], typeof cluster.servers[0]];
  const name = "confab-cluster.test";
  const dir = await Deno.makeTempDir({ prefix: "confab-hosts-" });
  try {
    const hosts = `${dir}/hosts`;
    await Deno.writeTextFile(
      hosts,
      `127.0.0.1 localhost\n127.0.0.2 ${name}\n127.0.0.3 ${name}\n`,
    );
    const wrapper = [
      "unshare",
      "--mount",
      "sh",
      "-c",
      'mount --bind "$1" /etc/hosts && shift && exec "$@"',
      "sh",
      hosts,
    ];
    await using alice = await TestClient.start("alice", { host: name, port: a.port }, {
      wrapper,
    });
    await alice.signup("alice");
    // Which of the two addresses she took: the cluster's list says.
    const from = a.proc.out.lines.length;
    await a.proc.write("list");
    const line = await a.proc.out.findFrom(from, (l) => l.startsWith("alice*"), "alice listed");
    const [on, other] = line.endsWith(`*${a.address}`) ? [a, b] : [b, a];
    assert.ok(line.endsWith(`*${on.address}`), `${line} names one of the instances`);
    await using bob = await TestClient.start("bob", other, { args: ["--server", other.address] });
    await bob.signup("bob");
    for (const [from, to] of [[alice, bob], [bob, alice]] as const) {
      await from.send(`contacts add ${to.proc.name}`);
      await from.event("contact_added", { user: to.proc.name });
    }
    await chatting(alice, bob);
    await alice.send("before");
    await bob.event("message", { text: "before" });

    on.proc.kill("SIGKILL");
    const killedAt = Date.now();
    await on.proc.status;
    const back = await alice.event("server_back", {}, 10_000);
    assert.equal(back.server, `${name}:${a.port}`, "the name as given");
    assert.ok(Date.now() - killedAt < 10_000);
    const after = other.proc.out.lines.length;
    await other.proc.write("list");
    await other.proc.out.findFrom(
      after,
      (l) => l.startsWith("alice*") && l.endsWith(`*${other.address}`),
      "alice on the other address",
    );
    await alice.send("after");
    await bob.event("message", { text: "after" });
    await leaveAndLogOut(bob);
    await alice.event("presence", { user: "bob", online: false });
    await sendStored(alice, "stored through the other address");
    await bob.send("in bob secret-pw");
    await bob.event("logged_in", { user: "bob" });
    await bob.send("show alice");
    await bob.event("message", { from: "alice", text: "stored through the other address" });
    assert.deepEqual(await historyOf(bob, "alice"), [
      "before",
      "after",
      "stored through the other address",
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("a relay between users on two instances is paired by the instance asked; the other user is told to join there", async () => {
  await using cluster = await startCluster(2);
  const [a, b] = cluster.servers as [typeof cluster.servers[0], typeof cluster.servers[0]];
  {
    await using alice = await TestClient.start("alice", a);
    await using bob = await TestClient.start("bob", b);
    await signUpAsContacts(alice, bob);
    for (const c of [alice, bob]) {
      await c.send("out");
      await c.event("logged_out");
    }
  }
  await using alice = await RawConn.login(a.port, "alice", await generateKeyPair());
  await using bob = await RawConn.login(b.port, "bob", await generateKeyPair());
  const token = await alice.request({ type: "relay_open", id: 2, user: "bob" });
  assert.equal(token.type, "relay_token", JSON.stringify(token));
  // bob's instance passes the offer on, with where alice's instance is.
  const offer = await bob.next("relay_offer");
  assert.deepEqual(offer, {
    type: "relay_offer",
    from: "alice",
    token: token.token,
    host: "127.0.0.1",
    port: a.port,
  });
});
