// Cross-checks hubbub's Fossil delta codec with the npm `fossil-delta` package. Reads JSON
// lines {source, target, delta} (base64) on stdin; for each prints {applied, created}: the
// target rebuilt from hubbub's delta by this package (or {error}), and this package's own
// delta of the pair, for hubbub to apply.
// Usage: node fossil.mjs < pairs.jsonl
import { createInterface } from 'node:readline';
import { applyDelta, createDelta } from 'fossil-delta';

const b64 = (bytes) => Buffer.from(bytes).toString('base64');
const raw = (text) => new Uint8Array(Buffer.from(text, 'base64'));

for await (const line of createInterface({ input: process.stdin })) {
  if (!line.trim()) continue;
  const { source, target, delta } = JSON.parse(line);
  const out = { created: b64(createDelta(raw(source), raw(target))) };
  try {
    out.applied = b64(applyDelta(raw(source), raw(delta)));
  } catch (err) {
    out.error = String(err && err.message);
  }
  console.log(JSON.stringify(out));
}
