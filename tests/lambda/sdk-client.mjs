// One call of the AWS SDK for JavaScript v3 against a fnexec daemon, for the Lambda API tests.
// Usage: node sdk-client.mjs REQUEST_JSON
//   {"endpoint","accessKeyId","secretAccessKey","region","op":"invoke"|"list"|"get"|"config",
//    "input":{...command input...},"maxAttempts":N,"requestTimeoutMs":N}
// Prints one JSON line: {"ok":true,...output} or {"ok":false,"name","message","status","attempts"}.
import { LambdaClient, InvokeCommand, ListFunctionsCommand, GetFunctionCommand,
         GetFunctionConfigurationCommand } from "@aws-sdk/client-lambda";
import { NodeHttpHandler } from "@smithy/node-http-handler";

const req = JSON.parse(process.argv[2]);
const client = new LambdaClient({
  endpoint: req.endpoint,
  region: req.region,
  credentials: { accessKeyId: req.accessKeyId, secretAccessKey: req.secretAccessKey },
  maxAttempts: req.maxAttempts ?? 3,
  requestHandler: new NodeHttpHandler({ requestTimeout: req.requestTimeoutMs ?? 60000, throwOnRequestTimeout: true }),
});
const input = req.input ?? {};
let command;
switch (req.op) {
  case "invoke":
    if (input.Payload !== undefined) input.Payload = new TextEncoder().encode(input.Payload);
    command = new InvokeCommand(input);
    break;
  case "list": command = new ListFunctionsCommand(input); break;
  case "get": command = new GetFunctionCommand(input); break;
  case "config": command = new GetFunctionConfigurationCommand(input); break;
  default: throw new Error(`unknown op ${req.op}`);
}
try {
  const out = await client.send(command);
  const { $metadata, Payload, ...rest } = out;
  const result = { ok: true, ...rest, attempts: $metadata.attempts, requestId: $metadata.requestId,
                   httpStatusCode: $metadata.httpStatusCode };
  if (Payload) result.Payload = new TextDecoder().decode(Payload);
  if (out.LogResult) result.Log = Buffer.from(out.LogResult, "base64").toString("utf8");
  console.log(JSON.stringify(result));
} catch (e) {
  console.log(JSON.stringify({ ok: false, name: e.name, message: e.message, status: e.$metadata?.httpStatusCode,
                               attempts: e.$metadata?.attempts, retryAfterSeconds: e.retryAfterSeconds }));
}
