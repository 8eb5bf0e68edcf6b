/**
 * Offline mail across crashes, end to end with real processes: mail survives a kill -9 of the
 * server, a reader killed during `show` or a sender's resend after a crash shows nothing twice,
 * a message that could go nowhere is not overtaken, and a logout saved while the server was down
 * reaches its registry. Each runs on one server over SQLite and on two instances over
 * PostgreSQL, alice on one and bob on the other.
 */
import assert from "node:assert/strict";
import { dateTime } from "../lib/util/time.ts";
import { CutProxy } from "../scripts/soak/proxy.ts";
import { deployments } from "./support/deployment.ts";
import { TestClient } from "./support/processes.ts";
import {
  hangingOf,
  historyOf,
  type Homes,
  inChat,
  makeUsers,
  removeHomes,
  sendStored,
  usersOnStoppedServer,
} from "./support/mail.ts";

deployments.test("pending messages survive kill -9 of the server and are shown once", async (d) => {
  const homes = await makeUsers(d, { alice: ["bob"], bob: ["alice"] });
  try {
    {
      await using alice = await inChat(d, homes, "alice", "bob");
      await sendStored(alice, ["kept 1", "kept 2"]);
      await d.killAll();
    }
    await d.start();
    await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
    await bob.login("bob");
    await bob.send("show alice");
    await bob.event("message", { text: "kept 1" });
    await bob.event("message", { text: "kept 2" });
    assert.equal((await bob.event("shown", { from: "alice" })).count, 2);
    await bob.send("show alice");
    assert.equal((await bob.event("shown", { from: "alice" })).count, 0, "gone once confirmed");
  } finally {
    await removeHomes(homes);
  }
});

deployments.test("a reader killed during show is not shown the messages twice, and history holds each once", async (d) => {
  const homes = await makeUsers(d, { alice: ["bob"], bob: ["alice"] });
  try {
    {
      await using alice = await inChat(d, homes, "alice", "bob");
      await sendStored(alice, ["first", "second"]);
    }
    {
      // This client kills itself (SIGKILL) after storing the batch, before confirming it.
      await using bob = await TestClient.start("bob", d.at("bob"), {
        home: homes.bob,
        env: { CONFAB_FAULT: "crash-before-mail-confirm" },
      });
      await bob.login("bob");
      await bob.send("show alice");
      const status = await bob.proc.exited();
      assert.equal(status.signal, "SIGKILL");
    }
    await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
    await bob.login("bob");
    assert.equal((await hangingOf(bob))[0]!.count, 2);
    // They were stored (and shown) before the crash: confirmed now, not shown again.
    await bob.send("show alice");
    await bob.event("shown", { from: "alice", count: 0 });
    assert.equal(bob.events().filter((e) => e.type === "message").length, 0);
    assert.deepEqual(await hangingOf(bob), []);
    await bob.send("chat alice");
    const opened = await bob.event("chat_opened", { with: "alice" });
    const texts = (opened.history as { text: string }[]).map((h) => h.text);
    assert.deepEqual(texts, ["first", "second"], "no duplicate rows in history");
  } finally {
    await removeHomes(homes);
  }
});

deployments.test("a resend of mail stored just before a server crash and read since is not stored or shown again", async (d) => {
  const homes = await usersOnStoppedServer(d, { alice: ["bob"], bob: ["alice"] });
  try {
    {
      // This server dies right after committing a mail, before answering the sender.
      await d.start({ env: { CONFAB_FAULT: "crash-after-mail-store" } });
      const crashing = d.at("alice");
      await using alice = await TestClient.start("alice", crashing, { home: homes.alice });
      await alice.login("alice");
      await alice.send("chat bob");
      await alice.event("chat_opened", { with: "bob", online: false });
      await alice.send("only once");
      const sent = await alice.event("sent", { text: "only once" });
      await alice.event("queued", { id: sent.id }); // no answer: it stays in alice's outbox
      assert.equal((await crashing.proc.status).signal, "SIGKILL");
      alice.proc.kill("SIGKILL"); // before she can send it again
    }
    await d.killAll();
    await d.start();
    {
      // Bob reads the copy the server committed.
      await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
      await bob.login("bob");
      await bob.send("show alice");
      await bob.event("message", { text: "only once" });
      await bob.event("shown", { from: "alice", count: 1 });
    }
    // Alice's client sends what it had no answer for: the server knows bob read it.
    await using alice = await TestClient.start("alice", d.at("alice"), { home: homes.alice });
    await alice.login("alice");
    const read = await alice.anyEvent("read", { by: "bob" });
    await alice.anyEvent("stored", { id: (read.ids as string[])[0] });
    assert.deepEqual(await historyOf(alice, "bob", true), ["only once**"]);

    await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
    await bob.login("bob");
    assert.deepEqual(await hangingOf(bob), [], "the resend was not stored");
    assert.deepEqual(await historyOf(bob, "alice"), ["only once"]);
    // Read once, said once: the resend's answer does not tell alice a second time.
    assert.deepEqual(await historyOf(alice, "bob", true), ["only once**"]);
    assert.equal(alice.events().filter((e) => e.type === "read").length, 1);
  } finally {
    await removeHomes(homes);
  }
});

deployments.test("a mail message the server delivers again is shown once", async (d) => {
  const homes = await makeUsers(d, { alice: ["bob"], bob: ["alice"] });
  try {
    let row: Record<string, unknown>;
    {
      await using alice = await inChat(d, homes, "alice", "bob", { online: false });
      await sendStored(alice, ["replayed"]);
      // What the server holds now, as a backup (or an attacker holding the database) keeps it.
      row = (await d.sql("SELECT * FROM mail"))[0]!;
      await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
      await bob.login("bob");
      await bob.send("show alice");
      await bob.event("message", { text: "replayed" });
      await bob.event("shown", { from: "alice", count: 1 });
    }
    await d.killAll();
    // The server comes back with the message waiting again (restored from that backup).
    await d.sql("DELETE FROM mail_read");
    await d.sql(
      `INSERT INTO mail (recipient, sender, msg_id, ts, body, stored_at)
       VALUES (?, ?, ?, ?, ?, ?)`,
      ["recipient", "sender", "msg_id", "ts", "body", "stored_at"].map((c) =>
        row[c] as string | number
      ),
    );
    await d.start();
    await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
    await bob.login("bob");
    assert.equal((await hangingOf(bob))[0]?.count, 1);
    await bob.send("show alice");
    await bob.event("shown", { from: "alice", count: 0 });
    assert.equal(bob.events().filter((e) => e.type === "message").length, 0, "not shown again");
    assert.deepEqual(await hangingOf(bob), [], "confirmed all the same");
    assert.deepEqual(await historyOf(bob, "alice"), ["replayed"]);
  } finally {
    await removeHomes(homes);
  }
});

deployments.test("a message neither the peer nor the server could take is not overtaken by the next", async (d) => {
  const homes = await usersOnStoppedServer(d, { alice: ["bob"], bob: ["alice"] });
  // Bob is reached through a proxy that can cut the path without closing it.
  await using proxy = new CutProxy();
  try {
    await d.start();
    await using bob = await TestClient.start("bob", d.at("bob"), {
      home: homes.bob,
      args: ["--announce-port", String(proxy.port)],
    });
    proxy.target = Number(bob.events().find((e) => e.type === "ready")!.peerPort);
    await bob.login("bob");
    await using alice = await inChat(d, homes, "alice", "bob", { online: true });

    // The path to bob goes silent and the server dies: the first message can go nowhere.
    proxy.cut();
    await alice.event("link_down", { user: "bob" });
    await d.killAll();
    await alice.send("first");
    const first = await alice.event("sent", { text: "first" });
    await alice.event("queued", { id: first.id });

    // Both come back; the next message reaches alice's line while the first still waits.
    proxy.heal();
    await d.start();
    await alice.send("second");
    const second = await alice.event("sent", { text: "second" });
    // Each goes directly, or to bob's mailbox if alice is back before him; the first is settled
    // first either way, and on the direct path bob sees them in order.
    const settled = async (id: unknown) =>
      await Promise.any([alice.anyEvent("delivered", { id }), alice.anyEvent("stored", { id })]);
    const outcomes = [await settled(first.id), await settled(second.id)];
    assert.ok(
      outcomes[0]!.time as number <= (outcomes[1]!.time as number),
      "first settled first",
    );
    // Bob acks before his own output says so: wait for it before reading what he was shown.
    for (const [i, m] of [first, second].entries()) {
      if (outcomes[i]!.type === "delivered") await bob.anyEvent("message", { id: m.id });
    }
    const direct = bob.events().filter((e) => e.type === "message" && e.via === "direct");
    assert.deepEqual(
      direct.map((e) => e.text),
      ["first", "second"].filter((_, i) => outcomes[i]!.type === "delivered"),
    );
  } finally {
    await removeHomes(homes);
  }
});

deployments.test("a logout made while the server is down reaches the registry at the next login", async (d) => {
  const homes: Homes = {};
  try {
    homes.bob = await Deno.makeTempDir({ prefix: "confab-bob-" });
    await using bob = await TestClient.start("bob", d.at("bob"), { home: homes.bob });
    await bob.signup("bob");
    await d.killAll();
    await bob.event("server_lost");
    await bob.send("out");
    const out = await bob.event("logged_out", { savedLocally: true });

    await d.start();
    await bob.login("bob");
    const second = d.at("bob");
    await second.proc.write("registry bob");
    const saved = dateTime(out.at as number);
    // The newest row is the new login (still open); the one before ends at the saved time.
    const line = await second.proc.out.waitFor(
      (l) => l.startsWith("bob*") && l.split("*")[2] === saved,
      `registry row ending at ${saved}`,
    );
    const at = "\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\d";
    assert.match(line, new RegExp(`^bob\\*${at}\\*${at}\\*\\d+$`));
  } finally {
    await removeHomes(homes);
  }
});
