// Load generator for `camelid serve`: C concurrent clients, each sending streamed completions back to back
// (raw fetch + SSE parsing, no dependencies). Prints one JSON line: requests, failures, generated tokens,
// aggregate tokens/s, and p50/p99 time-to-first-token and inter-token latency (ms).
// usage: node serve_load.mjs BASE_URL CLIENTS REQUESTS_PER_CLIENT MAX_TOKENS [SECONDS]
// With SECONDS, clients loop until that much time has passed instead of a fixed request count.
const [base, clients = "1", perClient = "1", maxTokens = "128", seconds = "0"] = process.argv.slice(2);
const C = Number(clients), R = Number(perClient), N = Number(maxTokens), T = Number(seconds);
const words = ["Once", "upon", "a", "time", "there", "was", "a", "little", "dog", "who", "liked", "to", "run"];

async function one(i) {
  const prompt = Array.from({ length: 8 }, (_, k) => words[(i * 7 + k * 3) % words.length]).join(" ");
  const t0 = performance.now();
  const res = await fetch(`${base}/v1/completions`, { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prompt, max_tokens: N, temperature: 0, stream: true, stream_options: { include_usage: true } }) });
  if (res.status !== 200) throw new Error(`status ${res.status}`);
  const times = [];
  let tokens = 0, buf = "", done = false;
  const dec = new TextDecoder();
  for await (const part of res.body) {
    buf += dec.decode(part, { stream: true });
    let k;
    while ((k = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, k);
      buf = buf.slice(k + 2);
      if (!ev.startsWith("data: ")) continue;
      const data = ev.slice(6);
      if (data === "[DONE]") { done = true; continue; }
      const j = JSON.parse(data);
      if (j.error) throw new Error(j.error.message);
      if (j.usage) tokens = j.usage.completion_tokens;
      else if (j.choices[0].text) times.push(performance.now());
    }
  }
  if (!done) throw new Error("stream ended without [DONE]");
  return { ttft: times.length ? times[0] - t0 : NaN, itl: times.slice(1).map((t, k) => t - times[k]), tokens };
}

const pct = (a, p) => { if (!a.length) return NaN; const s = [...a].sort((x, y) => x - y); return s[Math.min(s.length - 1, Math.floor(p / 100 * s.length))]; };
const ttft = [], itl = [];
let tokens = 0, failures = 0, requests = 0;
const start = performance.now();
await Promise.all(Array.from({ length: C }, async (_, c) => {
  for (let r = 0; T > 0 ? performance.now() - start < T * 1000 : r < R; r++) {
    requests++;
    try {
      const x = await one(c * 1000 + r);
      ttft.push(x.ttft); itl.push(...x.itl); tokens += x.tokens;
    } catch (e) { failures++; console.error(`client ${c}: ${e.message}`); }
  }
}));
const secs = (performance.now() - start) / 1000;
const f = (x) => Math.round(x * 10) / 10;
console.log(JSON.stringify({ clients: C, requests, failures, tokens, seconds: f(secs), tokens_per_s: f(tokens / secs),
  ttft_ms_p50: f(pct(ttft, 50)), ttft_ms_p99: f(pct(ttft, 99)), itl_ms_p50: f(pct(itl, 50)), itl_ms_p99: f(pct(itl, 99)) }));
