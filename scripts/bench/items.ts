/**
 * The bench items, in the order a full run takes them. To add one: write
 * `scripts/bench/<name>.ts` exporting a `BenchItem`, and list it here.
 */
import { chatRtt } from "./chat_rtt.ts";
import { cluster } from "./cluster.ts";
import { failover } from "./failover.ts";
import { file } from "./file.ts";
import { group } from "./group.ts";
import { login } from "./login.ts";
import { offline } from "./offline.ts";
import { reattach } from "./reattach.ts";
import { relay } from "./relay.ts";
import { serverConns } from "./server_conns.ts";
import type { BenchItem } from "./types.ts";

export const ITEMS: readonly BenchItem[] = [
  chatRtt,
  serverConns,
  reattach,
  file,
  offline,
  group,
  failover,
  login,
  relay,
  cluster,
];
