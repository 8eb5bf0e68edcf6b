/**
 * The short end-to-end tests: every file of tests/quick/, each a few seconds of real processes
 * (a server, a client, a terminal, a build), in one test module (tests/support/grouped.ts says
 * why). Run one file alone with `deno test -A tests/quick/migrate.ts`.
 */
import { importFolder } from "./support/grouped.ts";

await importFolder(import.meta.url, "quick");
