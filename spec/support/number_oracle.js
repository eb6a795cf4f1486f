// Differential oracle for spec/number_spec.lua: JavaScript's String(x) for
// each double.  Input: one 64-bit pattern a line, 16 hex digits, big-endian
// (so the double arrives exactly, with no decimal conversion on the way).
// Output: String(x) a line, in the same order.
'use strict';
const fs = require('fs');

const lines = fs.readFileSync(0, 'latin1').split('\n');
const buf = Buffer.alloc(8);
const out = [];
for (const hex of lines) {
  if (hex === '') continue;
  if (!/^[0-9a-f]{16}$/.test(hex)) throw new Error('bad line: ' + JSON.stringify(hex));
  buf.write(hex, 0, 'hex');
  out.push(String(buf.readDoubleBE(0)));
}
process.stdout.write(out.join('\n') + '\n');
