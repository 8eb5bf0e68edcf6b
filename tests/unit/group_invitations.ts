/**
 * Tests for lib/client/group_chats.ts: an invitation to a group that comes while no one can say
 * whether its sender is a contact (the server away, and no contact list yet in this session, as
 * right after a restart) waits for the server's word: taken once it confirms a contact, refused
 * (both sides told) once it says otherwise. Before, it was refused at once, and a contact's group
 * went on without the member it invited.
 *
 * Real GroupChats over a real ClientStore in a temporary folder; the links are stand-ins that
 * record what is sent, and the host's contact answer is the only thing chosen by the test.
 */
import assert from "node:assert/strict";
import { ClientStore } from "../../lib/client/client_store.ts";
import type { ClientEvent } from "../../lib/client/events.ts";
import { GroupChats, type GroupHost } from "../../lib/client/group_chats.ts";
import { createGroup, groupHandle } from "../../lib/peer/group_state.ts";
import { bobsHost, standIn } from "../support/peer_fixtures.ts";
import { tempDir } from "../support/temp_dir.ts";

Deno.test("an invitation that came while the server could not say who is a contact waits: a contact's is taken, a stranger's refused, once the server answers", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  const events: ClientEvent[] = [];
  // The server away and no list yet: no answer. Then the list comes: alice is a contact.
  let serverSays: Set<string> | undefined;
  let questions = 0;
  const links = { alice: standIn("alice"), mallory: standIn("mallory") };
  const host: GroupHost = {
    ...bobsHost(store, events, links, {}),
    isContact: (u) => {
      questions++;
      return Promise.resolve(serverSays?.has(u.toLowerCase()));
    },
  };

  const groups = new GroupChats(host);
  try {
    groups.ready();
    const hers = createGroup(["alice", "bob", "carol"]);
    const his = createGroup(["mallory", "bob"]);
    const invite = (by: "alice" | "mallory", group = by === "alice" ? hers : his) =>
      groups.onPeerMessage(links[by], { type: "group_state", group });

    // Both invitations wait: neither joined nor refused; bob is told once of each, even when
    // the inviter sends its state again (as it does at every link).
    await invite("alice");
    await invite("mallory");
    await invite("alice");
    assert.deepEqual(groups.active(), []);
    const infos = () =>
      events.filter((e) => e.type === "info").map((e) => e.type === "info" ? e.text : "");
    assert.equal(infos().length, 2);
    assert.match(
      infos()[0]!,
      new RegExp(
        `^alice invites you to group ${
          groupHandle(hers.id)
        }; it is taken once the server confirms alice is a contact`,
      ),
    );
    const refusals = (user: "alice" | "mallory") =>
      links[user].sent.filter((m) => m.type === "group_refused");
    assert.deepEqual(refusals("alice"), []);
    assert.deepEqual(refusals("mallory"), []);
    assert.deepEqual(events.filter((e) => e.type === "error"), []);

    // The server is back: alice is a contact, mallory is not.
    serverSays = new Set(["alice"]);
    const asked = questions;
    await groups.contactsKnown((u) => serverSays!.has(u.toLowerCase()));
    assert.deepEqual(groups.active().map((g) => g.id), [hers.id], "alice's group is joined");
    assert.ok(
      events.some((e) =>
        (e.type === "group_opened" || e.type === "group_invited") && e.group === hers.id
      ),
      "bob is shown the group",
    );
    assert.deepEqual(refusals("alice"), []);
    assert.deepEqual(refusals("mallory"), [
      { type: "group_refused", group: his.id, code: "NOT_A_CONTACT" },
    ]);
    const refused = events.filter((e) => e.type === "error" && e.code === "NOT_A_CONTACT");
    assert.equal(refused.length, 1);
    assert.ok(refused[0]!.type === "error");
    assert.match(refused[0]!.message, /^refused mallory's invitation to group/);
    assert.ok(questions - asked <= 1, "the list given answers, with no question per invitation");

    // Nothing is left waiting: the server's next answer changes nothing.
    await groups.contactsKnown(() => true);
    assert.deepEqual(groups.active().map((g) => g.id), [hers.id]);
  } finally {
    groups.close();
  }
});
