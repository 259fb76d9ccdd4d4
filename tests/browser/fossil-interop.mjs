// Fossil deltas across three implementations: our C# encoder (Client/FossilDelta.cs, which wrote the cases), our
// browser module (Gateway/wwwroot/js/fossil.js) and the npm package fossil-delta, which nobody here wrote.
// Run by tests/Client.Tests/FossilDeltaTests.cs:  node fossil-interop.mjs <cases.jsonl> <results.jsonl>
//
// A case line is {id, source, target, delta} (base64; delta made by C#) or {id, source, hostile, built} (a mutated or
// random delta and what the C# decoder built from it, null when it refused it). For each case this script checks:
//   npm applies the C# delta, and fossil.js applies it, giving the target byte for byte;
//   fossil.js applies npm's delta, and npm applies fossil.js's delta, giving the target;
//   fossil.js's encoder writes the same delta as the C# one (they are one algorithm);
//   fossil.js judges each hostile delta as C# did: the same bytes, or a FossilDeltaError (never another error).
// It writes {id, npmDelta, jsDelta} per case for the C# side to apply, prints failures, and ends with
// "OK fossil-interop ..." and exit code 0 only when there were none.
import { readFileSync, writeFileSync } from 'node:fs';
import * as npm from 'fossil-delta';
import { applyDelta, createDelta, FossilDeltaError } from '../../Gateway/wwwroot/js/fossil.js';

const MAX_REPORTED = 20;
const [casesFile, resultsFile] = process.argv.slice(2);
if (!casesFile || !resultsFile) {
  console.error('usage: node fossil-interop.mjs <cases.jsonl> <results.jsonl>');
  process.exit(2);
}

const bytes = (b64) => new Uint8Array(Buffer.from(b64, 'base64'));
const b64 = (array) => Buffer.from(array).toString('base64');
const same = (a, b) => a.length === b.length && Buffer.from(a).equals(Buffer.from(b));
const failures = [];
const fail = (id, what) => failures.push(`${id}: ${what}`);

function check(id, what, run, expected) {
  try {
    const built = run();
    if (!same(built, expected)) fail(id, `${what} built ${built.length} bytes, not the ${expected.length}-byte target`);
  } catch (e) {
    fail(id, `${what} threw ${e && e.message}`);
  }
}

const results = [];
let cases = 0;
let hostile = 0;
const sizes = { targets: 0, ours: 0, npm: 0 };
for (const line of readFileSync(casesFile, 'utf8').split('\n')) {
  if (!line) continue;
  const c = JSON.parse(line);
  const source = bytes(c.source);
  if (c.hostile !== undefined) {
    hostile++;
    const delta = bytes(c.hostile);
    const expected = c.built === null ? null : bytes(c.built);
    let built = null;
    try {
      built = applyDelta(source, delta, 1 << 16);
    } catch (e) {
      if (!(e instanceof FossilDeltaError)) fail(c.id, `fossil.js threw ${e && e.name} (${e && e.message}), not a FossilDeltaError`);
    }
    if ((built === null) !== (expected === null) || (built !== null && !same(built, expected))) {
      fail(c.id, `fossil.js ${built === null ? 'refused' : 'applied'} a delta C# ${expected === null ? 'refused' : 'applied'} (or built other bytes)`);
    }
    results.push({ id: c.id });
    continue;
  }

  cases++;
  const target = bytes(c.target);
  const csDelta = bytes(c.delta);
  check(c.id, 'npm applying the C# delta', () => npm.applyDelta(source, csDelta, { verifyChecksum: true }), target);
  check(c.id, 'fossil.js applying the C# delta', () => applyDelta(source, csDelta), target);
  const npmDelta = npm.createDelta(source, target);
  check(c.id, "fossil.js applying npm's delta", () => applyDelta(source, npmDelta), target);
  const jsDelta = createDelta(source, target);
  check(c.id, "npm applying fossil.js's delta", () => npm.applyDelta(source, jsDelta, { verifyChecksum: true }), target);
  if (!same(jsDelta, csDelta)) fail(c.id, `fossil.js's encoder wrote other bytes than C#'s (${jsDelta.length} and ${csDelta.length} bytes)`);
  sizes.targets += target.length;
  sizes.ours += csDelta.length;
  sizes.npm += npmDelta.length;
  results.push({ id: c.id, npmDelta: b64(npmDelta), jsDelta: b64(jsDelta) });
}

writeFileSync(resultsFile, results.map((r) => JSON.stringify(r)).join('\n') + '\n');
for (const f of failures.slice(0, MAX_REPORTED)) console.log('FAIL ' + f);
if (failures.length > 0) {
  console.log(`${failures.length} failures in ${cases} cases and ${hostile} hostile deltas`);
  process.exit(1);
}
console.log(`OK fossil-interop cases=${cases} hostile=${hostile} targetBytes=${sizes.targets} ourDeltaBytes=${sizes.ours} npmDeltaBytes=${sizes.npm}`);
