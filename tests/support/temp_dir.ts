/** A temporary directory for one test, removed with everything in it on dispose. */
export async function tempDir(
  prefix = "confab-test-",
): Promise<AsyncDisposable & { path: string }> {
  const path = await Deno.makeTempDir({ prefix });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true });
    },
  };
}
