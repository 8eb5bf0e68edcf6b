/**
 * Tests for lib/client/group_chats.ts: the state of a group I left stays within the limits every
 * state is held to, whatever anyone linked to me sends about that group.
 *
 * Real GroupChats over a real ClientStore in a temporary folder; stand-in links.
 */
import assert from "node:assert/strict";
import { ClientStore } from "../../lib/client/client_store.ts";
import type { ClientEvent } from "../../lib/client/events.ts";
import { GroupChats } from "../../lib/client/group_chats.ts";
import {
  createGroup,
  type GroupState,
  MAX_GROUP_TAGS,
  membersOf,
  removeMember,
  withinLimits,
} from "../../lib/peer/group_state.ts";
import { bobsHost, standIn } from "../support/peer_fixtures.ts";
import { tempDir } from "../support/temp_dir.ts";

Deno.test("the state of a group bob left does not grow past the limits however many crafted states come about it", async () => {
  await using dir = await tempDir();
  using store = new ClientStore(dir.path);
  const state = removeMember(createGroup(["alice", "bob", "carol"]), "bob");
  store.saveGroupState(state, membersOf(state), { left: true });
  const events: ClientEvent[] = [];
  const carol = standIn("carol");
  const groups = new GroupChats(bobsHost(store, events, { carol }, {}));
  try {
    groups.ready();
    // Each within the limits on its own: 1,024 tombstones never seen before.
    for (let i = 0; i < 8; i++) {
      const crafted: GroupState = {
        id: state.id,
        adds: [],
        removed: Array.from({ length: MAX_GROUP_TAGS }, () => crypto.randomUUID()),
      };
      await groups.onPeerMessage(carol, { type: "group_state", group: crafted });
    }
    // What bob holds for the group shows in what he answers about it.
    carol.sent.length = 0;
    await groups.onPeerMessage(carol, { type: "group_sum", group: state.id, sum: "0".repeat(16) });
    const answer = carol.sent.find((m) => m.type === "group_state");
    assert.ok(answer?.type === "group_state");
    const tags = answer.group.adds.length + answer.group.removed.length;
    assert.ok(withinLimits(answer.group), `bob holds ${tags} tags for a group he left`);
  } finally {
    groups.close();
  }
});
