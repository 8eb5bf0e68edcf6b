/**
 * The permissions the client and the server run with, written once: `deno task client` and
 * `deno task server` (deno.json, checked against these by tests/unit/permissions.ts since JSON
 * cannot import), the executables of `deno task compile`, the shebang of `deno task bundle`'s
 * files, and the client processes of the bench and the soak.
 */

/** What the server needs: its port, its data folder, and its settings from the environment. */
export const SERVER_PERMISSIONS: readonly string[] = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
];

/** The server's, and the free disk space (checked before a file is accepted). */
export const CLIENT_PERMISSIONS: readonly string[] = [
  ...SERVER_PERMISSIONS,
  "--allow-sys=statfs",
];

/** The command line of a deno.json task that runs `entry` with `permissions`. */
export function taskCommand(entry: string, permissions: readonly string[]): string {
  return ["deno", "run", ...permissions, entry].join(" ");
}
