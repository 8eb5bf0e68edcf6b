/**
 * The bench items, in the order a full run takes them. To add one: write
 * `scripts/bench/<name>.ts` exporting a `BenchItem`, and list it here.
 */
import { chatRtt } from "./chat_rtt.ts";
import { reattach } from "./reattach.ts";
import { serverConns } from "./server_conns.ts";
import type { BenchItem } from "./types.ts";

export const ITEMS: readonly BenchItem[] = [chatRtt, serverConns, reattach];
