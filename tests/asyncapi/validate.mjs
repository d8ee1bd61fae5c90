// Parses AsyncAPI documents with the official parser (@asyncapi/parser) and prints, for each
// path given, its diagnostics as one JSON array (a JSON array of arrays, in argument order),
// so that a Python test (checker.py) can judge them:
//   node tests/asyncapi/validate.mjs probe/schema/asyncapi.yaml [more.yaml ...]
// Several documents in one run because starting node and the parser costs seconds.
// Exit 0 whenever the parser ran (errors are in the JSON), 2 when it could not run at all.
import { Parser, fromFile } from '@asyncapi/parser';

const SEVERITY = ['error', 'warning', 'info', 'hint'];

const paths = process.argv.slice(2);
if (paths.length === 0) {
  console.error('usage: node validate.mjs <asyncapi.yaml>...');
  process.exit(2);
}
const parser = new Parser();
const all = [];
try {
  for (const path of paths) {
    const { document, diagnostics } = await fromFile(parser, path).parse();
    const found = diagnostics.map((d) => ({
      severity: SEVERITY[d.severity] ?? String(d.severity),
      code: String(d.code),
      message: d.message,
      path: d.path.map(String),
      line: d.range ? d.range.start.line + 1 : null,
    }));
    // A document the parser could not build is an error even if no diagnostic says so.
    if (!document && !found.some((d) => d.severity === 'error')) {
      found.push({ severity: 'error', code: 'no-document', message: 'no document', path: [],
        line: null });
    }
    all.push(found);
  }
} catch (err) {
  console.error(err && err.stack ? err.stack : String(err));
  process.exit(2);
}
process.stdout.write(JSON.stringify(all) + '\n');
