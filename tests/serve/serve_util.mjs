// Helpers for the tests that start `camelid serve` themselves: start (wait for "ready:", read the port),
// kill, JSON requests. Environment: BIN (camelid), MODEL, TOK.
import { spawn, execFileSync } from "node:child_process";
import fs from "node:fs";

export const { BIN, MODEL, TOK } = process.env;

let failures = 0;
export const ok = (cond, what, extra = "") => {
  if (cond) console.log(`ok: ${what}`);
  else {
    failures++;
    console.error(`FAIL: ${what} ${extra}`);
  }
};
export const failed = () => failures;

// Servers still running when the test ends (an assertion threw) are killed, never left behind.
const running = new Set();
process.on("exit", () => { for (const p of running) p.kill("SIGKILL"); });

// Start the server on a free port with `args` after the binary; resolves once it is ready.
export async function startServer(args, logPath) {
  const log = fs.openSync(logPath, "a");
  const from = fs.fstatSync(log).size; /* the log may hold earlier servers' lines */
  const proc = spawn(BIN, ["serve", ...args, "--port", "0"], { stdio: ["ignore", "ignore", log] });
  running.add(proc);
  proc.once("exit", () => running.delete(proc));
  const deadline = Date.now() + 30000;
  for (;;) {
    const text = fs.readFileSync(logPath).subarray(from).toString("utf8");
    const tail = text;
    const m = tail.match(/listening on http:\/\/127\.0\.0\.1:(\d+)/);
    if (m && /ready:/.test(tail)) {
      fs.closeSync(log);
      return { proc, port: Number(m[1]), base: `http://127.0.0.1:${m[1]}` };
    }
    if (proc.exitCode !== null || Date.now() > deadline) {
      fs.closeSync(log);
      throw new Error(`camelid serve did not start:\n${text}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

export function stopped(proc) {
  return proc.exitCode !== null || proc.signalCode !== null
    ? Promise.resolve()
    : new Promise((r) => proc.once("exit", r));
}

export async function call(base, method, path, body, headers = {}) {
  const res = await fetch(base + path, {
    method, headers: { "Content-Type": "application/json", ...headers },
    body: body === undefined ? undefined : typeof body === "string" ? body : JSON.stringify(body),
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch {}
  return { status: res.status, json, text, type: res.headers.get("content-type") };
}

// `camelid arena leaderboard --db DB --json`: what the database holds, read by another process.
export function dbLeaderboard(db) {
  return JSON.parse(execFileSync(BIN, ["arena", "leaderboard", "--db", db, "--json"]).toString());
}
