/**
 * The short end-to-end tests: every file of tests/quick/, each a few seconds of real processes
 * (a server, a client, a terminal, a build), in one test module (tests/support/grouped.ts says
 * why). Run one file alone with `deno test -A tests/quick/migrate.ts`.
 */
import { everyFileImported } from "./support/grouped.ts";
import "./quick/bundle.ts";
import "./quick/cli_args.ts";
import "./quick/cluster_task.ts";
import "./quick/e2e_file_modes.ts";
import "./quick/e2e_peer_flood.ts";
import "./quick/e2e_postgres.ts";
import "./quick/e2e_receipts.ts";
import "./quick/e2e_security.ts";
import "./quick/e2e_server_key.ts";
import "./quick/handshake_injection.ts";
import "./quick/json_front_end.ts";
import "./quick/listen_backlog.ts";
import "./quick/migrate.ts";
import "./quick/nat_lab.ts";
import "./quick/plain_words.ts";
import "./quick/resumption.ts";
import "./quick/share_paths.ts";
import "./quick/tty_escape.ts";
import "./quick/tty_paste.ts";
import "./quick/tty_prompt.ts";
import "./quick/tty_server_console.ts";
import "./quick/tty_server_key.ts";

everyFileImported(import.meta.url, "quick");
