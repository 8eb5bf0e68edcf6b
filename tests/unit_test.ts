/**
 * The unit tests: every file of tests/unit/ (no server, client or other program started), in one
 * test module (tests/support/grouped.ts says why). As 36 modules they took 19.5-21.3 CPU-s in
 * `deno task test`, as one 5.0-5.4. Run one file alone with `deno test -A tests/unit/noise.ts`.
 */
import { importFolder } from "./support/grouped.ts";

await importFolder(import.meta.url, "unit");
