// Run under `batchtok exec --compat` by tests/integration/test_node_sdk.py:
// a program that runs for longer than its capability's lifetime, as a
// service runs for hours. One ManagedIdentityCredential, made once, asks for
// the Batch token every argv[4] seconds for argv[3] seconds; at the end a
// pipeline with bearerTokenAuthenticationPolicy lists the jobs of the fake
// Batch account at argv[2]. Every request the credential sends goes through
// a counting HTTP client, so the output says how many reached the endpoint.
// Prints one JSON object; on the first failure, prints it with the error
// and exits 1.
import { ManagedIdentityCredential } from "@azure/identity";
import {
  bearerTokenAuthenticationPolicy,
  createDefaultHttpClient,
  createPipelineFromOptions,
  createPipelineRequest,
} from "@azure/core-rest-pipeline";

const SCOPE = "https://batch.core.windows.net//.default";
const [batchUrl, seconds, interval] = process.argv.slice(2);

const inner = createDefaultHttpClient();
const sent = [];
const httpClient = {
  async sendRequest(request) {
    const response = await inner.sendRequest(request);
    sent.push({ at: Date.now(), status: response.status });
    return response;
  },
};
const credential = new ManagedIdentityCredential({ httpClient });

const result = { iterations: 0, tokens: 0, requests: sent, batch: null, error: null };
const end = Date.now() + Number(seconds) * 1000;
const seen = new Set();
try {
  while (Date.now() < end) {
    const token = await credential.getToken(SCOPE);
    if (!token || !token.token || token.expiresOnTimestamp <= Date.now()) {
      throw new Error(`no valid token after ${result.iterations} iterations`);
    }
    seen.add(token.token);
    result.iterations += 1;
    await new Promise((resolve) => setTimeout(resolve, Number(interval) * 1000));
  }
  result.tokens = seen.size;
  const pipeline = createPipelineFromOptions({});
  pipeline.addPolicy(bearerTokenAuthenticationPolicy({ credential, scopes: SCOPE }));
  const response = await pipeline.sendRequest(
    createDefaultHttpClient(),
    createPipelineRequest({ url: `${batchUrl}/jobs?api-version=2024-07-01.20.0` }),
  );
  result.batch = response.status;
} catch (err) {
  result.error = `${err.name}: ${err.message}`;
}
result.at_end = Date.now();
console.log(JSON.stringify(result));
process.exitCode = result.error ? 1 : 0;
