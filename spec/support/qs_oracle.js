// Differential oracle for spec/query_spec.lua: runs Debian's node-qs over
// the cases the spec generated.  Input: one JSON document per line,
// {"input": <object>, "ours": "<our query string>"}.  Output: one line per
// case, {"stringify": qs.stringify(input, brackets, bytewise-sorted keys),
// "parse": qs.parse(ours)} with qs's default parse options.
'use strict';
const qs = require('qs');
const readline = require('readline');

const bytewise = (a, b) => Buffer.compare(Buffer.from(a), Buffer.from(b));
const rl = readline.createInterface({ input: process.stdin });
const out = [];
rl.on('line', (line) => {
  const c = JSON.parse(line);
  out.push(JSON.stringify({
    stringify: qs.stringify(c.input, { arrayFormat: 'brackets', sort: bytewise }),
    parse: qs.parse(c.ours),
  }));
});
rl.on('close', () => process.stdout.write(out.join('\n') + '\n'));
