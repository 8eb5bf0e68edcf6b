/**
 * Group chats over a full peer mesh, with real processes: delivery to every member once and
 * in order, convergence of concurrent adds, crash and freeze detection, history and search. Each
 * runs on one server over SQLite and on two instances over PostgreSQL, the members spread over
 * both. The scenarios that leave the servers alone share one deployment per backend (their users
 * named apart with `user()`); the one that stops the servers has its own.
 */
import assert from "node:assert/strict";
import { befriend, type Event, startServer, TestClient } from "./support/processes.ts";
import { type Deployment, deployments } from "./support/deployment.ts";
import { crowd, disposeAll, enter, membersAre, meshed } from "./support/groups.ts";
import { RecordingProxy } from "./support/proxy.ts";
import { join } from "node:path";
import { createGroup, groupHandle } from "../lib/peer/group_state.ts";
import { Identity } from "../lib/peer/identity.ts";
import { CraftedPeer } from "./support/crafted_peer.ts";
import type { Frame } from "./support/raw_conn.ts";

/** `first` chats with `second`, then adds the rest one by one; everyone ends in the group. */
async function makeGroup(clients: TestClient[]): Promise<string> {
  const [first, second, ...rest] = clients as [TestClient, TestClient, ...TestClient[]];
  await first.send(`chat ${second.proc.name}`);
  await first.event("chat_opened", { with: second.proc.name });
  let group = "";
  for (const c of rest) {
    await first.send(`/a ${c.proc.name}`);
    const opened = group === ""
      ? await first.event("group_opened")
      : await first.event("group_members", { joined: [c.proc.name] });
    group = String(opened.group);
  }
  const all = clients.map((c) => c.proc.name).sort();
  for (const c of clients) await membersAre(c, group, all);
  await meshed(clients);
  return group;
}

/** Users called `names` (alice, bob and carol), each declaring a silent peer gone after 2 s. */
function quickToNotice(d: Deployment, names = ["alice", "bob", "carol"]): Promise<TestClient[]> {
  const fast = { args: ["--peer-timeout", "2"] };
  return crowd(d, names, Object.fromEntries(names.map((name) => [name, fast])));
}

/**
 * Starts and signs up a client for each name, on the instance the deployment puts them on
 * (pushed to `clients` as each starts).
 */
async function signUp(d: Deployment, names: string[], clients: TestClient[]): Promise<void> {
  for (const name of names) {
    const c = await TestClient.start(name, d.at(name));
    clients.push(c);
    await c.signup(name);
  }
}

/** The scenarios that leave their deployment alone share one per backend. */
const shared = deployments.shared("group scenarios on one deployment");

function messagesIn(client: TestClient, group: string): Event[] {
  return client.events().filter((e) => e.type === "message" && e.group === group);
}

shared.test(
  "chat <user> from a group's window sends to that user alone, and the group goes on without the window",
  async (d, user) => {
    const clients = await crowd(d, ["alice", "bob", "carol"].map(user));
    try {
      const [alice, bob, carol] = clients as [TestClient, TestClient, TestClient];
      const group = await makeGroup(clients);
      await alice.send(`/chat ${bob.proc.name}`);
      await alice.event("group_window_closed", { group });
      await alice.event("chat_opened", { with: bob.proc.name });
      await alice.send("just for bob");
      const got = await bob.event("message", { from: alice.proc.name, text: "just for bob" });
      assert.equal(got.group, undefined, "a 1:1 message, not the group's");
      // Back in the group: carol gets what follows, and never the line for bob.
      await alice.send(`/chat ${groupHandle(String(group))}`);
      await alice.event("group_opened", { group });
      await alice.send("for everyone");
      await carol.event("message", { from: alice.proc.name, text: "for everyone", group });
      assert.ok(!carol.events().some((e) => e.text === "just for bob"), "carol never got it");
      const sent = alice.events().find((e) => e.type === "sent" && e.text === "just for bob");
      assert.equal(sent?.group, undefined, "sent to bob, not to the group");
    } finally {
      await disposeAll(clients);
    }
  },
);

shared.test(
  "three members: each message reaches the other two once, in order per author",
  async (d, user) => {
    const clients = await crowd(d, ["alice", "bob", "carol"].map(user));
    try {
      const group = await makeGroup(clients);
      const texts = (author: string) => [1, 2, 3, 4, 5].map((i) => `${author} says ${i}`);
      for (const c of clients) for (const text of texts(c.proc.name)) await c.send(text);
      for (const reader of clients) {
        for (const author of clients) {
          if (author === reader) continue;
          for (const text of texts(author.proc.name)) {
            await reader.proc.out.find((l) => l.includes(`"text":"${text}"`), text);
          }
        }
      }
      for (const reader of clients) {
        const got = messagesIn(reader, group);
        for (const author of clients) {
          if (author === reader) continue;
          const fromAuthor = got.filter((e) => e.from === author.proc.name).map((e) => e.text);
          assert.deepEqual(
            fromAuthor,
            texts(author.proc.name),
            `${reader.proc.name} from ${author.proc.name}`,
          );
        }
        assert.equal(got.length, 10, `${reader.proc.name} got each message once`);
      }
      // Every member acked every copy: none went to a mailbox, none failed (acks are per peer).
      for (const author of clients) {
        for (const text of texts(author.proc.name)) {
          const sent = author.events().find((e) => e.type === "sent" && e.text === text)!;
          for (const other of clients) {
            if (other === author) continue;
            await author.proc.out.find(
              (l) =>
                l.includes(`"type":"delivered"`) && l.includes(String(sent.id)) &&
                l.includes(`"to":"${other.proc.name}"`),
              `${other.proc.name}'s ack of ${text}`,
            );
          }
        }
        assert.ok(
          !author.events().some((e) => e.type === "stored" || e.type === "not_delivered"),
          `${author.proc.name}: every copy delivered directly`,
        );
        // Nobody was away, so nobody "is back" (a newcomer's first link is no return).
        assert.deepEqual(
          author.events().filter((e) => e.type === "group_presence"),
          [],
          `${author.proc.name}: no member said away or back`,
        );
      }
    } finally {
      await disposeAll(clients);
    }
  },
);

shared.test(
  "five members with two concurrent adds converge to one member list",
  async (d, user) => {
    const everyone = ["ann", "ben", "cat", "dan", "eve"].map(user);
    const clients = await crowd(d, everyone);
    try {
      const [ann, ben, cat, dan, eve] = clients as [
        TestClient,
        TestClient,
        TestClient,
        TestClient,
        TestClient,
      ];
      const group = await makeGroup([ann, ben, cat]);
      // ann adds dan while ben adds eve, at the same moment.
      await Promise.all([ann.send(`/a ${dan.proc.name}`), ben.send(`/a ${eve.proc.name}`)]);
      for (const c of [ann, ben, cat, dan, eve]) await membersAre(c, group, everyone);
      // And the mesh works: a message from the last one in reaches all.
      await eve.send("hello from eve");
      for (const c of [ann, ben, cat, dan]) await c.event("message", { text: "hello from eve" });
    } finally {
      await disposeAll(clients);
    }
  },
);

shared.test(
  "kill -9 of a member: it stays a member, is away as soon as its links close, and catches up inside the group after a restart",
  async (d, user) => {
    const A = user("alice"), B = user("bob"), C = user("carol");
    const clients = await crowd(d, [A, B, C]);
    try {
      const [alice, bob, carol] = clients as [TestClient, TestClient, TestClient];
      const group = await makeGroup(clients);
      const killedAt = Date.now();
      carol.proc.kill("SIGKILL");
      for (const c of [alice, bob]) {
        // Told from the closed link itself, not after the link went silent for the peer timeout
        // (how fast, in milliseconds, is the failover item of the bench: a deadline of a second
        // here would fail on a loaded machine).
        const e = await c.event("group_presence", { group, user: C, here: false });
        assert.doesNotMatch(
          String(e.reason),
          /^no answer for/,
          `told after ${Number(e.time) - killedAt} ms`,
        );
      }
      await alice.send("still here");
      await bob.event("message", { text: "still here", group });
      // The sender sees who has it and who it waits for.
      const waiting = await alice.event("group_status", { mark: "1/2", pending: [C] });
      assert.deepEqual(waiting.have, [B]);
      await bob.send("me too");
      await alice.event("message", { text: "me too", group });
      for (const c of [alice, bob]) {
        assert.ok(!c.events().some((e) => e.type === "group_members"), "nobody was removed");
      }
      // Carol comes back on her own home: she is in the group without anyone typing /a, and
      // gets what she missed as group messages, once, in order.
      const home = carol.home;
      await carol.proc[Symbol.asyncDispose]();
      await using carol2 = await TestClient.start(C, d.at(C), { home });
      await carol2.login(C);
      await carol2.event("group_rejoined", { group, members: [A, B, C] });
      await carol2.anyEvent("message", { text: "still here", group, from: A });
      await carol2.anyEvent("message", { text: "me too", group, from: B });
      await alice.anyEvent("group_status", { id: waiting.id, mark: "**", pending: [] });
      await alice.anyEvent("group_presence", { group, user: C, here: true });
      await carol2.send(`chat ${groupHandle(group)}`);
      await carol2.event("group_opened", { group });
      await carol2.send("back again");
      for (const c of [alice, bob]) await c.event("message", { text: "back again", group });
      const got = carol2.events().filter((e) => e.type === "message");
      assert.deepEqual(got.map((e) => e.text).sort(), ["me too", "still here"]);
      for (const c of [alice, bob]) await membersAre(c, group, [A, B, C]);
      await carol2.send("/b");
      await carol2.send(`history ${groupHandle(group)}`);
      const history = await carol2.event("history");
      assert.deepEqual(
        (history.entries as { text: string }[]).map((h) => h.text),
        ["still here", "me too", "back again"], // by send time
      );
    } finally {
      await disposeAll(clients);
    }
  },
);

Deno.test("a group sender killed -9 right after a member's delivered does not say it again after a restart: said once its ack is stored", async () => {
  await using server = await startServer();
  const clients = await crowd(server, ["alice", "bob", "carol"]);
  let again: TestClient | undefined;
  try {
    const [alice, bob, carol] = clients as [TestClient, TestClient, TestClient];
    const group = await makeGroup(clients);
    // Carol frozen: the message is not complete, so nothing else has alice store bob's ack.
    carol.proc.kill("SIGSTOP");
    await alice.send("said once");
    const sent = await alice.event("sent", { text: "said once" });
    // Killed the moment bob's delivered shows: had it been said before his ack was stored, his
    // copy would be owed again after the restart, go again, and be said again.
    const first = await alice.event("delivered", { id: sent.id, to: "bob" });
    alice.proc.kill("SIGKILL");
    carol.proc.kill("SIGCONT");
    const home = alice.home;
    await alice.proc[Symbol.asyncDispose]();
    again = await TestClient.start("alice", server, { home });
    await again.login("alice");
    await again.event("group_rejoined", { group });
    await again.send(`chat ${groupHandle(group)}`);
    await again.event("group_opened", { group });
    // Each member's copies go in order: whatever was still owed to them goes before this one.
    await again.send("after the restart");
    const later = await again.event("sent", { text: "after the restart" });
    for (const member of ["bob", "carol"]) {
      await again.anyEvent("delivered", { id: later.id, to: member });
    }
    const twice = again.events().filter((e) =>
      e.type === "delivered" && e.id === sent.id && e.to === first.to
    );
    assert.deepEqual(twice, [], `${first.to} was said to have it before the kill`);
    for (const c of [bob, carol]) {
      await c.anyEvent("message", { text: "after the restart", group });
      assert.equal(messagesIn(c, group).filter((e) => e.text === "said once").length, 1);
    }
  } finally {
    await again?.[Symbol.asyncDispose]();
    await disposeAll(clients);
  }
});

shared.test(
  "a frozen member is away within the bound, is back on its own on waking, gets what it missed, and what it typed while frozen goes out once",
  async (d, user) => {
    const A = user("alice"), B = user("bob"), C = user("carol");
    const clients = await quickToNotice(d, [A, B, C]);
    try {
      const [alice, bob, carol] = clients as [TestClient, TestClient, TestClient];
      const group = await makeGroup(clients);
      const stoppedAt = Date.now();
      carol.proc.kill("SIGSTOP");
      for (const c of [alice, bob]) {
        const e = await c.event("group_presence", { group, user: C, here: false }, 10_000);
        const after = Number(e.time) - stoppedAt;
        assert.ok(after <= 2000 + 1500, `declared away after ${after} ms (bound 2 s + one beat)`);
      }
      await alice.send("while carol sleeps");
      await bob.event("message", { text: "while carol sleeps", group });
      await carol.send("typed while frozen"); // waits in the pipe until she wakes
      carol.proc.kill("SIGCONT");
      await carol.event("message", { text: "while carol sleeps", group, from: A }, 20_000);
      for (const c of [alice, bob]) {
        await c.anyEvent("message", { text: "typed while frozen", group, from: C }, 20_000);
      }
      await alice.anyEvent("group_presence", { group, user: C, here: true }, 20_000);
      await bob.send("welcome back");
      await carol.event("message", { text: "welcome back", group });
      for (const c of clients) {
        await membersAre(c, group, [A, B, C]);
        assert.ok(!c.events().some((e) => e.type === "group_closed"), `${c.proc.name} stayed in`);
        const texts = c.events().filter((e) => e.type === "message").map((e) => e.text);
        assert.equal(new Set(texts).size, texts.length, `${c.proc.name} got each message once`);
      }
    } finally {
      await disposeAll(clients);
    }
  },
);

shared.test(
  "a member who leaves while another is away: the absent one learns it when back",
  async (d, user) => {
    const A = user("alice"), B = user("bob"), C = user("carol");
    const clients = await crowd(d, [A, B, C]);
    try {
      const [alice, bob, carol] = clients as [TestClient, TestClient, TestClient];
      const group = await makeGroup(clients);
      await carol.send("/b"); // back to the main prompt, still in the group
      await carol.event("group_window_closed", { group });
      await carol.send("out");
      await carol.event("logged_out");
      await alice.event("group_presence", { group, user: C, here: false });
      await bob.send("/q");
      await bob.event("group_closed", { group, reason: "you left" });
      await alice.event("group_members", { group, left: [B], reason: "left" });
      await carol.login(C);
      await carol.event("group_rejoined", { group, members: [A, B, C] });
      await membersAre(carol, group, [A, C]);
      await alice.send("just us");
      await carol.event("message", { text: "just us", group });
      assert.ok(!bob.events().some((e) => e.type === "message" && e.text === "just us"));
      // Bob, who left, is not pulled back in by Carol's old view.
      await membersAre(alice, group, [A, C]);
    } finally {
      await disposeAll(clients);
    }
  },
);

shared.test(
  "adding an offline, unknown or non-contact user is refused and the group is unchanged",
  async (d, user) => {
    const A = user("alice"), B = user("bob"), C = user("carol");
    const D = user("dave"), E = user("eve");
    const clients = await crowd(d, [A, B, C]);
    const dave = await TestClient.start(D, d.at(D));
    try {
      await dave.signup(D);
      const [alice, bob, carol] = clients as [TestClient, TestClient, TestClient];
      await befriend(alice, dave);
      await dave.send("out");
      await dave.event("logged_out");
      const group = await makeGroup(clients);
      await alice.send(`/a ${D}`);
      assert.match(
        String((await alice.event("error")).message),
        new RegExp(`${D} is offline; nobody was added`),
      );
      await alice.send("/a nobody");
      assert.match(String((await alice.event("error")).message), /no user named nobody/);
      const eve = await TestClient.start(E, d.at(E));
      await eve.signup(E);
      await alice.send(`/a ${E}`);
      assert.match(String((await alice.event("error")).message), /not in your contacts/);
      await eve[Symbol.asyncDispose]();
      for (const c of [alice, bob, carol]) {
        assert.ok(!c.events().some((e) => e.type === "group_members"), "no membership change");
      }
      await alice.send("/u");
      const online = await alice.event("online_contacts");
      assert.deepEqual([...(online.contacts as string[])].sort(), [B, C].sort());
      assert.ok(group.length > 0);
    } finally {
      await dave[Symbol.asyncDispose]();
      await disposeAll(clients);
    }
  },
);

shared.test(
  "history survives a restart with its marks, and search finds a word from a group chat",
  async (d, user) => {
    const homes: string[] = [];
    const A = user("alice"), B = user("bob"), C = user("carol");
    const clients = await crowd(d, [A, B, C]);
    try {
      const [alice, bob] = clients as [TestClient, TestClient, TestClient];
      homes.push(alice.home);
      const group = await makeGroup(clients);
      await alice.send("the quokka is the happiest animal");
      await bob.event("message", { text: "the quokka is the happiest animal" });
      await bob.send("/q");
      await bob.event("group_closed");
      // A 1:1 chat too, with its delivery marks.
      await bob.send(`chat ${A}`);
      await bob.event("chat_opened", { with: A });
      await bob.send("direct line");
      await bob.event("delivered");
      // Restart bob on the same home.
      const home = bob.home;
      await bob.proc[Symbol.asyncDispose]();
      await using bob2 = await TestClient.start(B, d.at(B), { home });
      await bob2.login(B);
      await bob2.send(`history ${A}`);
      const history = await bob2.event("history", { chat: A });
      assert.deepEqual(
        (history.entries as { text: string; mark: string }[]).map((h) => [h.text, h.mark]),
        [["direct line", "**"]],
      );
      await bob2.send("search quokka");
      const found = await bob2.event("search_results");
      const results = found.results as { chat: string; from: string; text: string }[];
      assert.equal(results.length, 1);
      assert.equal(results[0]!.from, A);
      assert.match(results[0]!.chat, /^#[0-9a-f]{6}$/);
      await bob2.send("groups");
      const groups = await bob2.event("groups");
      const listed = groups.groups as { id: string; active: boolean }[];
      assert.ok(listed.some((g) => g.id === group && g.active === false));
      await bob2.send(`history ${results[0]!.chat}`);
      const groupHistory = await bob2.event("history");
      assert.ok(
        (groupHistory.entries as { text: string }[]).some((h) =>
          h.text === "the quokka is the happiest animal"
        ),
      );
    } finally {
      await disposeAll(clients);
    }
  },
);

shared.test(
  "members who are not each other's contacts link for the group and talk, also after one restarts",
  async (d, user) => {
    const clients: TestClient[] = [];
    try {
      await signUp(d, ["alice", "bob", "carol"].map(user), clients);
      const [alice, bob, carol] = clients as [TestClient, TestClient, TestClient];
      // Alice and each of the others are contacts both ways; bob and carol are strangers.
      for (const [a, b] of [[alice, bob], [alice, carol], [bob, alice], [carol, alice]] as const) {
        await a.send(`contacts add ${b.proc.name}`);
        await a.event("contact_added", { user: b.proc.name });
      }
      const group = await makeGroup(clients);
      await bob.send("hello carol");
      await carol.anyEvent("message", { text: "hello carol", group, from: bob.proc.name });
      await carol.send("hello bob");
      await bob.anyEvent("message", { text: "hello bob", group, from: carol.proc.name });
      // Carol restarts (a new peer port): bob reaches her again through what the group tells.
      const home = carol.home;
      await carol.proc[Symbol.asyncDispose]();
      await using carol2 = await TestClient.start(carol.proc.name, d.at(carol.proc.name), { home });
      await carol2.login(carol.proc.name);
      await carol2.event("group_rejoined", { group });
      await carol2.anyEvent("link_up", { user: bob.proc.name }, 20_000);
      await bob.send("welcome back carol");
      await carol2.anyEvent("message", { text: "welcome back carol", group, from: bob.proc.name });
    } finally {
      await disposeAll(clients);
    }
  },
);

deployments.test("with the server down, a member back from a freeze links again directly and catches up", async (d) => {
  const clients = await quickToNotice(d);
  try {
    const [alice, bob, carol] = clients as [TestClient, TestClient, TestClient];
    const group = await makeGroup(clients);
    await d.killAll();
    for (const c of clients) await c.event("server_lost");
    carol.proc.kill("SIGSTOP");
    await alice.event("group_presence", { group, user: "carol", here: false }, 10_000);
    await alice.send("while carol sleeps and the server is gone");
    carol.proc.kill("SIGCONT");
    // No server to look anyone up: the members dial what the group told them, checked
    // against the pinned keys.
    await carol.anyEvent(
      "message",
      { text: "while carol sleeps and the server is gone", group },
      20_000,
    );
    await carol.send("back without the server");
    for (const c of [alice, bob]) {
      await c.anyEvent("message", { text: "back without the server", group }, 20_000);
    }
  } finally {
    await disposeAll(clients);
  }
});

Deno.test("an invitation from a contact is taken at once while the server does not answer: the contact list is known from before", async () => {
  await using server = await startServer();
  // carol reaches the server through a proxy that can hold its answers back.
  await using proxy = new RecordingProxy(server.port);
  const clients: TestClient[] = [];
  try {
    for (
      const [name, port] of [["alice", server.port], ["bob", server.port], [
        "carol",
        proxy.port,
      ]] as const
    ) {
      const c = await TestClient.start(name, { port });
      clients.push(c);
      await enter(c, name);
    }
    const [alice, bob, carol] = clients as [TestClient, TestClient, TestClient];
    for (const [a, b] of [[alice, bob], [alice, carol], [bob, alice], [carol, alice]] as const) {
      await a.send(`contacts add ${b.proc.name}`);
      await a.event("contact_added", { user: b.proc.name });
    }
    // alice and carol linked before (a chat alice left), so no one needs the server for that.
    await alice.send("chat carol");
    await alice.event("chat_opened", { with: "carol" });
    await carol.anyEvent("link_up", { user: "alice" });
    await alice.send("\\q");
    await alice.send("chat bob");
    await alice.event("chat_opened", { with: "bob" });
    // Nothing the server says reaches carol any more; alice and bob still have it.
    proxy.holdDown = true;
    await alice.send("/a carol");
    const group = String((await alice.event("group_opened")).group);
    // carol takes alice's invitation without waiting for an answer that does not come.
    await membersAre(carol, group, ["alice", "bob", "carol"]);
    assert.deepEqual(carol.events().filter((e) => e.code === "NOT_A_CONTACT"), []);
  } finally {
    proxy.holdDown = false;
    await disposeAll(clients);
  }
});

/** The next frame of `type` from `peer`, answering pings and passing over everything else. */
async function frameOf(peer: CraftedPeer, type: string, ms = 20_000): Promise<Frame> {
  for (const deadline = Date.now() + ms;;) {
    const frame = await peer.raw.next(undefined, Math.max(1, deadline - Date.now()));
    if (frame.type === "ping") await peer.send({ type: "pong", id: frame.id });
    if (frame.type === type) return frame;
  }
}

shared.test(
  "a fellow member who is not a contact cannot pull you into a group of theirs: refused, both told",
  async (d, user) => {
    const clients: TestClient[] = [];
    try {
      const B = user("bob"), C = user("carol");
      await signUp(d, ["alice", "bob", "carol"].map(user), clients);
      const [alice, bob, carol] = clients as [TestClient, TestClient, TestClient];
      // alice is a contact of both; bob and carol are strangers who share alice's group.
      await befriend(alice, bob);
      await befriend(alice, carol);
      const shared = await makeGroup(clients);
      const identity = (await Identity.load(join(carol.home, C, "identity.json")))!;
      await carol[Symbol.asyncDispose]();
      const { peerPort } = bob.events().find((e) => e.type === "ready")! as unknown as {
        peerPort: number;
      };
      // carol, with a client of her own making, links to bob (let in: they share a group) and
      // sends him the state of a new group of hers, as an invitation.
      await using peer = await CraftedPeer.dial(peerPort, { me: C, to: B, identity });
      const hers = createGroup([C, B]);
      await peer.send({ type: "group_state", group: hers });
      const refused = await bob.event("error", { code: "NOT_A_CONTACT" });
      assert.match(
        String(refused.message),
        new RegExp(
          `refused ${C}'s invitation to group ${groupHandle(hers.id)}: only a mutual contact`,
        ),
      );
      assert.deepEqual(await frameOf(peer, "group_refused"), {
        type: "group_refused",
        group: hers.id,
        code: "NOT_A_CONTACT",
      });
      // Sent again (as a client does at every link), it is refused without a second notice.
      await peer.send({ type: "group_state", group: hers });
      await frameOf(peer, "group_refused");
      assert.equal(bob.events().filter((e) => e.code === "NOT_A_CONTACT").length, 1);
      assert.ok(
        !bob.events().some((e) => e.group === hers.id),
        "bob never joined carol's group",
      );
      // The group they share goes on: alice still reaches bob.
      await alice.send("still here");
      await bob.anyEvent("message", { text: "still here", group: shared, from: alice.proc.name });
    } finally {
      await disposeAll(clients);
    }
  },
);
