// Run under `batchtok exec --compat` by tests/integration/test_node_sdk.py:
// an unmodified @azure/identity credential (argv[2]: ManagedIdentityCredential
// or DefaultAzureCredential) gets a token for Azure Batch from batchtokd's
// compat endpoint, then an @azure/core-rest-pipeline pipeline with its
// bearerTokenAuthenticationPolicy lists the jobs of the fake Batch account
// at argv[3] (HTTPS: the test CA comes in NODE_EXTRA_CA_CERTS). Prints one
// JSON object on stdout; exits 1 with the error on stderr if anything fails.
import { format } from "node:util";
import { DefaultAzureCredential, ManagedIdentityCredential } from "@azure/identity";
import {
  bearerTokenAuthenticationPolicy,
  createDefaultHttpClient,
  createPipelineFromOptions,
  createPipelineRequest,
} from "@azure/core-rest-pipeline";
import { AzureLogger, setLogLevel } from "@azure/logger";

const SCOPE = "https://batch.core.windows.net//.default";
const [kind, batchUrl] = process.argv.slice(2);

// What the SDK says about its choices (which managed-identity source, which
// credential of the chain), kept rather than printed: stdout is the result.
const logs = [];
setLogLevel("info");
AzureLogger.log = (...args) => logs.push(format(...args));

const credentials = { DefaultAzureCredential, ManagedIdentityCredential };
const credential = new credentials[kind]();
const token = await credential.getToken(SCOPE);

const httpClient = createDefaultHttpClient();
const pipeline = createPipelineFromOptions({});
pipeline.addPolicy(bearerTokenAuthenticationPolicy({ credential, scopes: SCOPE }));
const jobs = [];
const statuses = [];
let url = `${batchUrl}/jobs?api-version=2024-07-01.20.0`;
while (url) {
  const response = await pipeline.sendRequest(httpClient, createPipelineRequest({ url }));
  statuses.push(response.status);
  if (response.status !== 200) {
    break;
  }
  const page = JSON.parse(response.bodyAsText);
  jobs.push(...page.value.map((job) => job.id));
  url = page["odata.nextLink"];
}

const source = logs.map((l) => l.match(/Using (\w+) managed identity/)).find(Boolean);
console.log(
  JSON.stringify({
    token: token.token,
    expiresOnTimestamp: token.expiresOnTimestamp,
    tokenType: token.tokenType,
    source: source ? source[1] : null,
    statuses,
    jobs,
    logs: logs.filter((l) => /DefaultAzureCredential|ChainedTokenCredential/.test(l)),
  }),
);
