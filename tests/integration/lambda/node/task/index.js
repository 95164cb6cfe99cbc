// An unmodified Lambda handler for Node.js, as written for AWS: fnexec's tests run it under the
// real runtime interface client (aws-lambda-ric). Module state counts the events this process saw.
let count = 0;

exports.handler = async (event, context) => {
  count += 1;
  console.log(`handling ${context.awsRequestId} count ${count}`);
  switch (event.action) {
    case "throw":
      throw new TypeError("thrown by the handler");
    case "exit":
      process.exit(5);
    case "crash":
      process.kill(process.pid, "SIGSEGV");
      break;
    case "context":
      return { clientContext: context.clientContext ?? null, identity: context.identity ?? null,
               traceId: process.env._X_AMZN_TRACE_ID ?? null };
    case "sleep":
      await new Promise((resolve) => setTimeout(resolve, 60000));
      break;
  }
  return {
    count,
    echo: event,
    remaining: context.getRemainingTimeInMillis(),
    requestId: context.awsRequestId,
    functionName: context.functionName,
    memory: context.memoryLimitInMB,
    arn: context.invokedFunctionArn,
  };
};
