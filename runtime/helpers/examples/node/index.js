// Example fnexec function: echoes a JSON event with a count of the events this process has seen.
//
//   fnexec run --lifecycle reuse IMAGE -- node /opt/fnexec/fnexec_runtime.js ./index.handler
//
// Test hooks (used by fnexec's own tests): {"raw": true} returns the event's bytes as they came,
// {"count": true} the number of events this process has seen, {"remaining": true} the milliseconds
// left before the deadline, {"raise": "message"} throws a RangeError, {"print": "text"}
// console.logs and writes to fd 1 (both are the log).
// Non-JSON events (Buffers) are echoed unchanged.

// Init: runs once per process, before READY. State here carries across events in `reuse`.
let seen = 0;
if (process.env.EXAMPLE_FAIL_INIT) throw new TypeError('EXAMPLE_FAIL_INIT is set');

exports.handler = async (event, context) => {
  seen += 1;
  if (event === null || typeof event !== 'object' || Buffer.isBuffer(event)) return context.raw_event;
  if ('print' in event) {
    console.log(event.print);
    require('fs').writeSync(1, `fd1: ${event.print}\n`);  // below console: also the log
  }
  if ('raise' in event) throw new RangeError(event.raise);
  if (event.raw) return context.raw_event;
  if (event.count) return seen;
  if (event.remaining) return context.get_remaining_time_in_millis();
  return {
    event,
    seen,
    pid: process.pid,
    invocation_id: context.invocation_id,
    function_name: context.function_name,
    // No deadline is known when run without fnexec/1 (lifecycle oneshot).
    remaining_ms: context.deadline_ms === null ? null : context.get_remaining_time_in_millis(),
  };
};
