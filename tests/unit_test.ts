/**
 * The unit tests: every file of tests/unit/ (no server, client or other program started), in one
 * test module (tests/support/grouped.ts says why). As 36 modules they took 19.5-21.3 CPU-s in
 * `deno task test`, as one 5.0-5.4. Run one file alone with `deno test -A tests/unit/noise.ts`.
 */
import { everyFileImported } from "./support/grouped.ts";
import "./unit/accounts.ts";
import "./unit/bench_report.ts";
import "./unit/build_tool.ts";
import "./unit/bulk_frames.ts";
import "./unit/chacha_small.ts";
import "./unit/checkpointer.ts";
import "./unit/cli_lines.ts";
import "./unit/client_store.ts";
import "./unit/commands.ts";
import "./unit/console.ts";
import "./unit/docs.ts";
import "./unit/ed25519.ts";
import "./unit/file_hash.ts";
import "./unit/file_names.ts";
import "./unit/fingerprint.ts";
import "./unit/frame.ts";
import "./unit/framed_connection.ts";
import "./unit/group_catchup.ts";
import "./unit/group_state.ts";
import "./unit/identity.ts";
import "./unit/kick_lines.ts";
import "./unit/line_editor.ts";
import "./unit/messages.ts";
import "./unit/noise.ts";
import "./unit/peer_link.ts";
import "./unit/permissions.ts";
import "./unit/receipt_tree.ts";
import "./unit/reconnect_waits.ts";
import "./unit/render.ts";
import "./unit/schema.ts";
import "./unit/sealed_mail.ts";
import "./unit/sha256_small.ts";
import "./unit/soak.ts";
import "./unit/sqlite_store.ts";
import "./unit/time.ts";
import "./unit/transport.ts";

everyFileImported(import.meta.url, "unit");
