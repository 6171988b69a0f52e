// Parses each AsyncAPI document named on the command line with @asyncapi/parser (the AsyncAPI
// initiative's own validator) and prints its diagnostics as JSON, one object per document.
// Exit 1 when any document has an error-level diagnostic (severity 0).
import { readFile } from "node:fs/promises";
import { Parser } from "@asyncapi/parser";

const parser = new Parser();
let failed = false;
for (const path of process.argv.slice(2)) {
  const { document, diagnostics } = await parser.parse(await readFile(path, "utf8"), { source: path });
  const errors = diagnostics.filter((d) => d.severity === 0);
  failed ||= errors.length > 0 || document === undefined;
  console.log(JSON.stringify({
    path,
    parsed: document !== undefined,
    errors: errors.map((d) => ({ code: d.code, message: d.message, path: d.path.join(".") })),
    warnings: diagnostics.filter((d) => d.severity !== 0).map((d) => ({ code: d.code, message: d.message, path: d.path.join(".") })),
  }));
}
process.exit(failed ? 1 : 0);
