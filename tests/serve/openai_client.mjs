// Drives `camelid serve` with the official openai npm client (and raw sockets for the misbehaving clients).
// Environment: BASE (http://127.0.0.1:PORT), API_KEY, BIN (camelid), MODEL, TOK, MODEL_ID.
// Greedy text over the API is checked against `camelid generate` (completions) and `camelid chat` (chat).
import OpenAI from "openai";
import { execFileSync } from "node:child_process";
import net from "node:net";
import http from "node:http";

const { BASE, API_KEY, BIN, MODEL, TOK, MODEL_ID } = process.env;
const url = new URL(BASE);
const client = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: API_KEY, maxRetries: 0, timeout: 60000 });
let failures = 0;
const ok = (cond, what, extra = "") => {
  if (cond) console.log(`ok: ${what}`);
  else {
    failures++;
    console.error(`FAIL: ${what} ${extra}`);
  }
};

function generateText(prompt, n) {
  const out = execFileSync(BIN, ["generate", MODEL, "--tokenizer", TOK, "--temperature", "0", "-n", String(n),
                                 "--no-echo", "-p", prompt], { stdio: ["ignore", "pipe", "ignore"] });
  return out.toString("utf8").replace(/\n$/, "");
}
function chatText(message, n) {
  const out = execFileSync(BIN, ["chat", MODEL, "--tokenizer", TOK, "--temperature", "0", "-n", String(n)],
                           { input: message + "\n", stdio: ["pipe", "pipe", "ignore"] });
  return out.toString("utf8").replace(/\n$/, "");
}

async function streamCompletion(prompt, n) {
  const stream = await client.completions.create({ model: MODEL_ID, prompt, max_tokens: n, temperature: 0,
                                                   stream: true });
  let text = "", finish = null, chunks = 0;
  for await (const c of stream) {
    chunks++;
    if (c.object !== "text_completion") throw new Error(`chunk object ${c.object}`);
    text += c.choices[0].text;
    if (c.choices[0].finish_reason) finish = c.choices[0].finish_reason;
  }
  return { text, finish, chunks };
}

async function streamChat(content, n, includeUsage = false) {
  const stream = await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content }],
    max_tokens: n, temperature: 0, stream: true, stream_options: includeUsage ? { include_usage: true } : undefined });
  const chunks = [];
  for await (const c of stream) chunks.push(c);
  return chunks;
}

async function raw(method, path, { body, headers = {} } = {}) {
  const res = await fetch(`${BASE}${path}`, { method, body, headers: { Authorization: `Bearer ${API_KEY}`, ...headers } });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch {}
  return { status: res.status, json, text };
}

async function metric(name) {
  const r = await raw("GET", "/metrics");
  const m = r.text.match(new RegExp(`^${name}\\{[^}]*\\} ([0-9.e+-]+)$`, "m"));
  return m ? Number(m[1]) : NaN;
}

const PROMPTS = ["Once upon a time, there was a little girl", "The cat sat", "Tom and Sue went to the park",
  "One day, a big dog", "Lily liked to", "The sun was hot and", "A little bird", "Ben had a red ball"];
const N = 40;

// ------------------------------------------------------------------------------------- basic calls
const models = await client.models.list();
ok(models.data.length === 1 && models.data[0].id === MODEL_ID && models.data[0].object === "model",
   "/v1/models lists the served model", JSON.stringify(models.data));

const expected0 = generateText(PROMPTS[0], N);
const c0 = await client.completions.create({ model: MODEL_ID, prompt: PROMPTS[0], max_tokens: N, temperature: 0 });
ok(c0.object === "text_completion" && /^cmpl-/.test(c0.id) && typeof c0.created === "number" && c0.model === MODEL_ID,
   "completion shape");
ok(c0.choices[0].text === expected0, "completion greedy text = camelid generate",
   JSON.stringify([c0.choices[0].text, expected0]));
ok(c0.choices[0].finish_reason === "length" && c0.usage.completion_tokens === N && c0.usage.prompt_tokens === 13 &&
   c0.usage.total_tokens === 13 + N, "completion usage and finish_reason", JSON.stringify(c0.usage));

const s0 = await streamCompletion(PROMPTS[0], N);
ok(s0.text === expected0 && s0.finish === "length" && s0.chunks > 2, "streamed completion = camelid generate",
   JSON.stringify(s0));

const short = await client.completions.create({ model: MODEL_ID, prompt: PROMPTS[0], max_tokens: 400, temperature: 0,
                                                stop: ["park"] });
ok(short.choices[0].finish_reason === "stop" && !short.choices[0].text.includes("park") &&
   expected0.startsWith(short.choices[0].text), "stop string ends the text before it",
   JSON.stringify(short.choices[0]));

const CHAT_Q = "Tell me a story about a cat.";
const chatExpected = chatText(CHAT_Q, N);
const ch = await client.chat.completions.create({ model: MODEL_ID, messages: [{ role: "user", content: CHAT_Q }],
                                                  max_tokens: N, temperature: 0 });
ok(ch.object === "chat.completion" && /^chatcmpl-/.test(ch.id) && ch.choices[0].message.role === "assistant",
   "chat completion shape");
ok(ch.choices[0].message.content === chatExpected, "chat greedy text = camelid chat",
   JSON.stringify([ch.choices[0].message.content, chatExpected]));
ok(["stop", "length"].includes(ch.choices[0].finish_reason) && ch.usage.prompt_tokens > 0 &&
   ch.usage.total_tokens === ch.usage.prompt_tokens + ch.usage.completion_tokens, "chat usage");

const chunks = await streamChat(CHAT_Q, N, true);
const first = chunks[0].choices[0];
ok(chunks.every((c) => c.object === "chat.completion.chunk" && c.id === chunks[0].id),
   "chat chunks share id and object");
ok(first.delta.role === "assistant" && first.delta.content === "", "first delta is the role");
const last = chunks[chunks.length - 2], usageChunk = chunks[chunks.length - 1];
ok(last.choices[0].finish_reason === ch.choices[0].finish_reason && Object.keys(last.choices[0].delta).length === 0,
   "last choice chunk: empty delta with finish_reason", JSON.stringify(last));
ok(usageChunk.choices.length === 0 && usageChunk.usage.completion_tokens === ch.usage.completion_tokens,
   "include_usage adds a usage chunk with choices []", JSON.stringify(usageChunk));
const streamedText = chunks.map((c) => c.choices[0]?.delta?.content ?? "").join("");
ok(streamedText === chatExpected, "streamed chat = camelid chat", JSON.stringify(streamedText));
const noUsage = await streamChat(CHAT_Q, 5, false);
ok(noUsage.every((c) => c.choices.length === 1 && !c.usage), "no usage chunk without include_usage");

// tokenize / detokenize
const tk = await raw("POST", "/tokenize", { body: JSON.stringify({ content: "Once upon a time", add_special: true }) });
ok(tk.status === 200 && JSON.stringify(tk.json.tokens) === "[1,403,407,261,378]", "/tokenize", tk.text);
const dt = await raw("POST", "/detokenize", { body: JSON.stringify({ tokens: [403, 407, 261, 378] }) });
ok(dt.status === 200 && dt.json.content === "Once upon a time", "/detokenize", dt.text);

// ----------------------------------------------------------------------------------------- errors
const err = async (p) => { try { await p; return null; } catch (e) { return e; } };
let e = await err(client.chat.completions.create({ model: "no-such-model", messages: [{ role: "user", content: "x" }] }));
ok(e && e.status === 404 && e.code === "model_not_found", "404 model_not_found", e && `${e.status} ${e.code}`);
const badKey = new OpenAI({ baseURL: `${BASE}/v1`, apiKey: "wrong", maxRetries: 0 });
e = await err(badKey.models.list());
ok(e && e.status === 401, "401 with a wrong API key", e && e.status);
ok((await fetch(`${BASE}/health`)).status === 200, "/health needs no key");
e = await err(client.completions.create({ model: MODEL_ID, prompt: PROMPTS[0], max_tokens: 100000 }));
ok(e && e.status === 400 && e.code === "context_length_exceeded", "context overflow is 400 with the counts",
   e && e.message);
for (const [body, what] of [["{not json", "invalid JSON"], ['{"messages": "hi"}', "messages not an array"],
  ['{"messages": [{"role": "user", "content": "x"}], "max_tokens": "ten"}', "max_tokens a string"],
  ['{"messages": [{"role": "user", "content": "x"}], "temperature": "hot"}', "temperature a string"],
  ['{"messages": [{"role": "wizard", "content": "x"}]}', "unknown role"], ["[]", "an array body"]]) {
  const r = await raw("POST", "/v1/chat/completions", { body, headers: { "Content-Type": "application/json" } });
  ok(r.status === 400 && r.json?.error?.type === "invalid_request_error" && "param" in r.json.error &&
     "code" in r.json.error, `400 for ${what}`, r.text);
}
ok((await raw("GET", "/v1/nothing")).status === 404, "unknown route is 404");

function bigContentLength() {
  return new Promise((resolve) => {
    const req = http.request({ host: url.hostname, port: url.port, path: "/v1/completions", method: "POST",
      headers: { "Content-Length": String(50 * 1024 * 1024), Authorization: `Bearer ${API_KEY}` } },
    (res) => { res.resume(); resolve(res.statusCode); });
    req.on("error", () => resolve(-1));
    req.write("{");  // the rest never comes: the answer must be decided from Content-Length
  });
}
ok(await bigContentLength() === 413, "413 from Content-Length before the body");

// ------------------------------------------------------------------------- continuous batching
// long enough (150 tokens each) that the streams overlap however the requests are spread in time
const NB = 150;
const solo = PROMPTS.map((p) => generateText(p, N));
const soloLong = PROMPTS.map((p) => generateText(p, NB));
const together = await Promise.all(PROMPTS.map((p) => streamCompletion(p, NB)));
ok(together.every((r, i) => r.text === soloLong[i] && r.finish === "length"), "8 concurrent greedy streams = solo text",
   JSON.stringify(together.map((r, i) => r.text === soloLong[i])));
// the scheduler records the largest decode batch: at least two of the streams shared forwards
const batchMax = await metric("camelid_decode_batch_max");
ok(batchMax >= 2, `sequences decoded together in one forward (max ${batchMax})`);

// ---------------------------------------------------------- bad clients alongside normal traffic
function slowHeaders() {  // sends half a request line, then nothing: the server must drop it
  return new Promise((resolve) => {
    const t0 = Date.now();
    const s = net.connect(Number(url.port), url.hostname, () => s.write("POST /v1/completions HTTP/1.1\r\nHost: x\r\n"));
    s.on("close", () => resolve(Date.now() - t0));
    s.on("error", () => {});
    s.on("data", () => {});
    setTimeout(() => { s.destroy(); resolve(-1); }, 15000);
  });
}
function abruptDisconnect() {  // starts a long stream, reads a little, vanishes
  return new Promise((resolve) => {
    const body = JSON.stringify({ prompt: "Once upon a time", max_tokens: 400, stream: true, temperature: 0 });
    const req = http.request({ host: url.hostname, port: url.port, path: "/v1/completions", method: "POST",
      headers: { "Content-Type": "application/json", Authorization: `Bearer ${API_KEY}` } }, (res) => {
      res.once("data", () => { req.destroy(); resolve(res.statusCode); });
    });
    req.on("error", () => {});
    req.end(body);
  });
}
function garbage() {  // not HTTP at all
  return new Promise((resolve) => {
    const s = net.connect(Number(url.port), url.hostname, () => s.end("\x00\x01GARBAGE\r\n\r\n"));
    s.on("close", () => resolve(true));
    s.on("error", () => resolve(true));
    s.on("data", () => {});
  });
}
const cancelledBefore = await metric("camelid_jobs_cancelled_total");
const [normal, slow, abrupt, , invalid] = await Promise.all([
  Promise.all(PROMPTS.slice(0, 4).map((p) => streamCompletion(p, N))),
  slowHeaders(),
  Promise.all([abruptDisconnect(), abruptDisconnect(), abruptDisconnect()]),
  garbage(),
  Promise.all([1, 2, 3].map(() => raw("POST", "/v1/completions", { body: '{"prompt": ' }))),
]);
ok(normal.every((r, i) => r.text === solo[i]), "normal streams complete amid bad clients");
ok(slow > 0, `slow-header client dropped by the server after ${slow} ms`);
ok(abrupt.every((s) => s === 200), "abrupt disconnects got a stream first");
ok(invalid.every((r) => r.status === 400), "invalid JSON answered 400 amid traffic");
let busy = NaN;
for (let i = 0; i < 50; i++) {
  busy = await metric("camelid_requests_processing");
  if (busy === 0) break;
  await new Promise((r) => setTimeout(r, 100));
}
ok(busy === 0, "disconnected clients freed their slots", `busy ${busy}`);
ok(await metric("camelid_jobs_cancelled_total") >= cancelledBefore + 3, "abrupt disconnects cancelled their jobs");
const after = await client.completions.create({ model: MODEL_ID, prompt: PROMPTS[1], max_tokens: N, temperature: 0 });
ok(after.choices[0].text === solo[1], "the server still answers correctly afterwards");
const metricsText = (await raw("GET", "/metrics")).text;
ok(/camelid_requests_total\{route="\/v1\/completions",code="400"\}/.test(metricsText) &&
   /camelid_tokens_predicted_total\{model=/.test(metricsText), "/metrics has request and token counters");

if (failures) {
  console.error(`${failures} failure(s)`);
  process.exit(1);
}
