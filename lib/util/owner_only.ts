/**
 * Files and folders for their owner only: what Confab keeps (keys, databases, history, mail,
 * downloads) is nobody else's business on a shared machine. Folders are 0700, files 0600; a
 * folder found open to others is closed, and the caller says so.
 */

/** What a too-open folder was changed from, for a notice; undefined when nothing changed. */
export interface ModeFix {
  path: string;
  from: number;
}

/** True on systems with Unix modes (not on Windows, where Deno reports none). */
const HAS_MODES = Deno.build.os !== "windows";

/**
 * Makes `dir` (and missing parents) with mode 0700; an existing folder that lets the group or
 * others in is set to 0700.
 * @returns the change made to an existing folder, for a notice.
 */
export function ownerOnlyDir(dir: string): ModeFix | undefined {
  Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (!HAS_MODES) return undefined;
  const mode = Deno.statSync(dir).mode! & 0o777;
  if ((mode & 0o077) === 0) return undefined;
  Deno.chmodSync(dir, 0o700);
  return { path: dir, from: mode };
}

/** One line about a {@link ModeFix}, for people. */
export function describeFix(fix: ModeFix, what: string): string {
  return `${what} ${fix.path} was open to others (mode ${
    fix.from.toString(8).padStart(4, "0")
  }); ` +
    `set it to 0700, owner only`;
}

/**
 * Creates `path` as an empty owner-only file if it does not exist, and takes group and other
 * permissions off it (and off the given companion files, such as a database's write-ahead
 * log) if they exist. Call before a library creates the file with its own default mode.
 */
export function ownerOnlyFile(path: string, companions: readonly string[] = []): void {
  Deno.openSync(path, { write: true, create: true, mode: 0o600 }).close();
  if (!HAS_MODES) return;
  for (const file of [path, ...companions]) {
    try {
      if ((Deno.statSync(file).mode! & 0o077) !== 0) Deno.chmodSync(file, 0o600);
    } catch (error) {
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
}
