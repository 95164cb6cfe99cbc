'use strict';
// fnexec function runtime for Node.js (no dependencies): speaks the fnexec/1 frame protocol.
//
//   node fnexec_runtime.js ./index.handler        (MODULE.EXPORT, MODULE relative to the working dir)
//
// loads MODULE (CommonJS, or ES module via import()) and calls EXPORT(event, context) for each event;
// the handler may be sync or async. Under `fnexec` with lifecycle fresh or reuse
// (FNEXEC_PROTOCOL=fnexec/1) it sends READY after loading and answers EVENT frames until stdin
// closes; without FNEXEC_PROTOCOL (lifecycle oneshot, or a shell) it runs the handler once on all of
// stdin and writes the result to stdout.
//
// event: the payload parsed as JSON when it is valid UTF-8 JSON, null when empty, else a Buffer.
// context: function_name, invocation_id, deadline_ms, raw_event, get_remaining_time_in_millis()
// (and Lambda's functionName, getRemainingTimeInMillis()). result: Buffer/Uint8Array as is, string as
// UTF-8, anything else as JSON. A throw or rejection becomes an ERROR frame {errorType, errorMessage,
// stackTrace}; a failure while loading an INIT_ERROR, then exit 1. console.log and process.stdout go
// to stderr, the function's log. Between events the process blocks reading stdin, so timers set by
// a handler run only while a later event is being handled. See fnexec-protocol(7).

const fs = require('fs');
const path = require('path');

const PROTOCOL = 'fnexec/1';
const MAX_HEADER = 256;
const MAX_LENGTH = 2 ** 40;

// Node has no dup(): the private channel is a second open of the same pipes via /proc/self/fd, and
// fds 0 and 1 are reopened on /dev/null and stderr (open() takes the lowest free fd). Where that is
// not possible (not pipes, or pipes owned by another uid), the frames stay on fds 0/1 and only
// JS-level output (console, process.stdout) is redirected.
function takeChannel() {
  const { O_RDONLY, O_WRONLY, O_APPEND } = fs.constants;
  let inFd = 0;
  let outFd = 1;
  try {
    // A regular file reopened would get its own offset and overwrite what the original fd writes.
    if (!fs.fstatSync(0).isFIFO() || !fs.fstatSync(1).isFIFO()) throw new Error('not pipes');
    const probe = fs.openSync('/proc/self/fd/2', O_WRONLY | O_APPEND);
    fs.closeSync(probe);
    inFd = fs.openSync('/proc/self/fd/0', O_RDONLY);
    try {
      outFd = fs.openSync('/proc/self/fd/1', O_WRONLY | O_APPEND);
    } catch (e) {
      fs.closeSync(inFd);
      throw e;
    }
    fs.closeSync(1);
    if (fs.openSync('/proc/self/fd/2', O_WRONLY | O_APPEND) !== 1) throw new Error('fd 1 was taken');
    fs.closeSync(0);
    if (fs.openSync('/dev/null', O_RDONLY) !== 0) throw new Error('fd 0 was taken');
  } catch (e) {
    if (inFd !== 0 && outFd === 1) inFd = 0;
  }
  const stdin = () => require('stream').Readable.from([]);
  Object.defineProperty(process, 'stdout', { configurable: true, enumerable: true, get: () => process.stderr });
  Object.defineProperty(process, 'stdin', { configurable: true, enumerable: true, get: stdin });
  return { inFd, outFd };
}

function sleepMs(ms) {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

class ProtocolError extends Error {}

// Blocking buffered reads from the channel: a line of at most MAX_HEADER bytes, or exactly n bytes.
class Reader {
  constructor(fd) {
    this.fd = fd;
    this.buf = Buffer.allocUnsafe(65536);
    this.start = 0;
    this.end = 0;
  }

  readInto(target, offset) {
    for (;;) {
      try {
        return fs.readSync(this.fd, target, offset, target.length - offset, null);
      } catch (e) {
        if (e.code === 'EAGAIN') sleepMs(1);
        else if (e.code === 'EOF') return 0;
        else throw e;
      }
    }
  }

  fill() {
    if (this.start > 0) {
      this.buf.copy(this.buf, 0, this.start, this.end);
      this.end -= this.start;
      this.start = 0;
    }
    const n = this.readInto(this.buf, this.end);
    this.end += n;
    return n > 0;
  }

  // A line without its "\n"; null at end of input.
  readLine() {
    for (;;) {
      const nl = this.buf.indexOf(10, this.start);
      if (nl >= 0 && nl < this.end) {
        if (nl - this.start >= MAX_HEADER) break;
        const line = this.buf.toString('latin1', this.start, nl);
        this.start = nl + 1;
        return line;
      }
      if (this.end - this.start >= MAX_HEADER) break;
      if (!this.fill()) {
        if (this.end === this.start) return null;
        throw new ProtocolError('input ended inside an event header');
      }
    }
    throw new ProtocolError(`event header has no newline within ${MAX_HEADER} bytes`);
  }

  readExact(n) {
    const out = Buffer.allocUnsafe(n);
    const have = Math.min(n, this.end - this.start);
    this.buf.copy(out, 0, this.start, this.start + have);
    this.start += have;
    let got = have;
    while (got < n) {
      const m = this.readInto(out, got);  // large payloads are read straight into place
      if (m === 0) throw new ProtocolError(`input ended after ${got} of ${n} payload bytes`);
      got += m;
    }
    return out;
  }

  readAll() {
    const parts = [this.buf.subarray(this.start, this.end)];
    for (;;) {
      const chunk = Buffer.allocUnsafe(65536);
      const m = this.readInto(chunk, 0);
      if (m === 0) return Buffer.concat(parts);
      parts.push(chunk.subarray(0, m));
    }
  }
}

function writeAll(fd, buf) {
  let off = 0;
  while (off < buf.length) {
    try {
      off += fs.writeSync(fd, buf, off, buf.length - off);
    } catch (e) {
      if (e.code !== 'EAGAIN') throw e;
      sleepMs(1);
    }
  }
}

function isNumber(text) {
  return /^(0|[1-9][0-9]*)$/.test(text);
}

function readEvent(reader) {
  const line = reader.readLine();
  if (line === null) return null;
  const f = line.split(' ');
  if (f.length !== 4 || f[0] !== 'EVENT' || !isNumber(f[2]) || !isNumber(f[3]) || Number(f[3]) > MAX_LENGTH)
    throw new ProtocolError(`expected 'EVENT <id> <deadline_ms> <len>', got '${line.slice(0, 80)}'`);
  const n = Number(f[3]);
  const payload = n > 0 ? reader.readExact(n) : Buffer.alloc(0);
  const nl = reader.readExact(1);
  if (nl[0] !== 10) throw new ProtocolError(`event ${f[1]}: no newline after ${n} payload bytes`);
  return { id: f[1], deadlineMs: Number(f[2]), payload };
}

const utf8 = new TextDecoder('utf-8', { fatal: true });

function decodeEvent(raw) {
  if (raw.length === 0) return null;
  try {
    return JSON.parse(utf8.decode(raw));
  } catch (e) {
    return raw;
  }
}

function encodeResult(result) {
  if (Buffer.isBuffer(result)) return result;
  if (result instanceof Uint8Array) return Buffer.from(result.buffer, result.byteOffset, result.byteLength);
  if (typeof result === 'string') return Buffer.from(result, 'utf8');
  const json = JSON.stringify(result === undefined ? null : result);
  return Buffer.from(json === undefined ? 'null' : json, 'utf8');
}

function errorBody(err, errorType) {
  const isError = err instanceof Error;
  const stack = isError && typeof err.stack === 'string' ? err.stack.split('\n').slice(1).map((l) => l.trim()) : [];
  return Buffer.from(JSON.stringify({
    errorType: errorType || (isError ? err.name || err.constructor.name : typeof err),
    errorMessage: isError ? String(err.message) : String(err),
    stackTrace: stack.filter((l) => !l.includes(__filename) && !l.includes('(node:internal/')),
  }));
}

function makeContext(functionName, id, deadlineMs, raw) {
  const remaining = () => (deadlineMs === null ? Infinity : Math.max(0, deadlineMs - Date.now()));
  return {
    function_name: functionName,
    functionName,
    invocation_id: id,
    deadline_ms: deadlineMs,  // unix epoch ms; null when no deadline is known (oneshot)
    raw_event: raw,
    get_remaining_time_in_millis: remaining,
    getRemainingTimeInMillis: remaining,
  };
}

// ['OK', bytes] or ['ERROR', json bytes].
async function handle(handler, raw, context) {
  let result;
  try {
    result = await handler(decodeEvent(raw), context);
  } catch (e) {
    console.error(e);
    return ['ERROR', errorBody(e)];
  }
  try {
    return ['OK', encodeResult(result)];
  } catch (e) {
    return ['ERROR', errorBody(e, 'Runtime.MarshalError')];
  }
}

function send(outFd, header, payload) {
  if (payload === undefined) return writeAll(outFd, Buffer.from(header, 'latin1'));
  if (payload.length <= 65536) return writeAll(outFd, Buffer.concat([Buffer.from(header, 'latin1'), payload, Buffer.from('\n')]));
  writeAll(outFd, Buffer.from(header, 'latin1'));
  writeAll(outFd, payload);
  writeAll(outFd, Buffer.from('\n'));
}

async function loadHandler(spec) {
  const dot = spec.lastIndexOf('.');
  if (dot <= 0 || dot === spec.length - 1) throw new Error(`handler '${spec}' is not MODULE.EXPORT`);
  const modulePath = path.resolve(process.cwd(), spec.slice(0, dot));
  const name = spec.slice(dot + 1);
  let mod;
  try {
    mod = require(modulePath);
  } catch (e) {
    if (e.code !== 'ERR_REQUIRE_ESM') throw e;
    mod = await import(require('url').pathToFileURL(require.resolve(modulePath)).href);
  }
  const handler = mod[name] ?? mod.default?.[name];
  if (typeof handler !== 'function') {
    const err = new Error(`module '${spec.slice(0, dot)}' has no exported function '${name}'`);
    err.name = 'Runtime.HandlerNotFound';
    throw err;
  }
  return handler;
}

// Answers events with handler until stdin closes (fnexec/1), or once (oneshot). load() returns the
// handler or throws; it runs after the channel is taken, so its output goes to the log too.
async function start(load) {
  const protocol = process.env.FNEXEC_PROTOCOL || '';
  const functionName = process.env.FNEXEC_FUNCTION_NAME || '';
  const { inFd, outFd } = takeChannel();
  const reader = new Reader(inFd);
  const initError = (body) => {
    send(outFd, `INIT_ERROR ${body.length}\n`, body);
    process.exit(1);
  };
  let handler;
  try {
    handler = await load();
  } catch (e) {
    console.error(e);
    if (!protocol) process.exit(1);
    initError(errorBody(e));
  }
  if (!protocol) {
    const raw = reader.readAll();
    const [kind, body] = await handle(handler, raw, makeContext(functionName, 'oneshot', null, raw));
    if (kind === 'ERROR') {
      process.stderr.write(body.toString() + '\n');
      process.exit(1);
    }
    writeAll(outFd, body);
    return;
  }
  if (protocol !== PROTOCOL) {
    const message = `FNEXEC_PROTOCOL is '${protocol}', this runtime speaks ${PROTOCOL}`;
    initError(Buffer.from(JSON.stringify({ errorType: 'Runtime.ProtocolError', errorMessage: message })));
  }
  send(outFd, `READY ${PROTOCOL}\n`);
  for (;;) {
    let event;
    try {
      event = readEvent(reader);
    } catch (e) {
      process.stderr.write(`fnexec_runtime.js: protocol error from fnexec: ${e.message}\n`);
      process.exit(2);
    }
    if (event === null) break;
    const context = makeContext(functionName, event.id, event.deadlineMs, event.payload);
    const [kind, body] = await handle(handler, event.payload, context);
    send(outFd, `${kind} ${event.id} ${body.length}\n`, body);
  }
  process.exit(0);  // pending timers or sockets of the handler must not keep a retired process alive
}

// For a script that requires this module: serve(handler).
function serve(handler) {
  return start(() => handler);
}

module.exports = { serve, decodeEvent, encodeResult };

if (require.main === module) {
  if (process.argv.length !== 3) {
    process.stderr.write('usage: node fnexec_runtime.js MODULE.EXPORT\n');
    process.exit(2);
  }
  start(() => loadHandler(process.argv[2]));
}
