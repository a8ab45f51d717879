#!/usr/bin/env bash
# camelid finetune and merge: LoRA, QLoRA and full fine-tuning of stories260K on the Alpaca demo set, PEFT
# files as PEFT writes them, merge == --adapter, exact resume, ShareGPT with the vicuna template, bad input.
source "$(dirname "$0")/lib.bash"

ALPACA=$SHARED/data/sft/llamafactory-alpaca-en-demo/alpaca_en_demo.json
SHAREGPT=$(ls "$SHARED"/data/sft/fastchat-dummy-conversation/*.json | head -1)
BASE=$S260/stories260K.bin
TOK=$S260/tok512.bin
common=(--tokenizer "$TOK" --data "$ALPACA" --template alpaca --batch 2 --seq 128 --lr 2e-3 -t 1)

# LoRA: 12 steps straight vs 6 + resume
"$BIN" finetune "$BASE" "${common[@]}" --lora --steps 12 --out "$TMP/lora" >"$TMP/lora.out" 2>"$TMP/lora.err" ||
    fail "finetune --lora: $(cat "$TMP/lora.err")"
grep -q "^fine-tuned: PEFT adapter" "$TMP/lora.out" && pass "finetune --lora" || fail "summary: $(cat "$TMP/lora.out")"
grep -q "examples (.* truncated, .* skipped" "$TMP/lora.err" && pass "truncation and skips reported" || fail "stats line"
"$BIN" finetune "$BASE" "${common[@]}" --lora --steps 12 --ckpt-every 6 --out "$TMP/lora2" >/dev/null 2>&1 || fail "run 2"
python3 - "$TMP/lora/log.jsonl" <<'EOF' && pass "log: one line per step plus evaluation lines" || fail "log lines"
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
steps = [r for r in rows if "loss" in r]
assert [r["step"] for r in steps] == list(range(1, 13)), steps
for r in steps:
    assert set(r) == {"step", "loss", "lr", "tokens_per_s"}, r
vals = [r for r in rows if "val_loss" in r]
assert len(vals) == 1 and vals[0]["step"] == 12 and set(vals[0]) == {"step", "val_loss"}, vals
EOF

# exact resume: stop after step 6 (a checkpoint, as an interruption), resume to 12 == straight
losses() { python3 -c 'import json,sys
for l in open(sys.argv[1]):
    o=json.loads(l)
    if "loss" in o: print(o["step"], repr(o["loss"]))' "$1"; }
"$BIN" finetune "$BASE" "${common[@]}" --lora --steps 12 --stop-after 6 --out "$TMP/half" >/dev/null 2>&1 || fail "stop-after"
[ -f "$TMP/half/adapter_model.safetensors" ] && fail "adapter written before the horizon" || pass "no adapter before the horizon"
"$BIN" finetune "$BASE" "${common[@]}" --lora --steps 12 --resume --out "$TMP/half" >/dev/null 2>&1 || fail "resume"
if cmp -s <(losses "$TMP/lora/log.jsonl") <(losses "$TMP/half/log.jsonl"); then
    pass "exact resume: 12 straight == 6 + 6 resumed"
else
    fail "resumed losses differ"
    diff <(losses "$TMP/lora/log.jsonl") <(losses "$TMP/half/log.jsonl") | head -4 >&2
fi
cmp -s "$TMP/lora/adapter_model.safetensors" "$TMP/half/adapter_model.safetensors" && pass "resumed adapter is byte-identical" ||
    fail "resumed adapter differs"
if cmp -s <(losses "$TMP/lora/log.jsonl") <(losses "$TMP/lora2/log.jsonl"); then pass "checkpointing does not change the run"; else fail "ckpt-every changed losses"; fi
# a resume that would not continue the same run is refused, naming the flag
"$BIN" finetune "$BASE" "${common[@]}" --qlora --steps 14 --resume --out "$TMP/lora2" >/dev/null 2>"$TMP/e" &&
    fail "resumed a lora run as qlora" ||
    { grep -q "is a lora fine-tune; resume it with the same mode (this run is qlora)" "$TMP/e" && pass "resume refuses another mode" ||
        fail "mode mismatch message: $(cat "$TMP/e")"; }
"$BIN" finetune "$BASE" "${common[@]}" --lora --lora-r 4 --steps 14 --resume --out "$TMP/lora2" >/dev/null 2>"$TMP/e" &&
    fail "resumed with another rank" ||
    { grep -q "was made with --lora-r 8; resume with the same value (this run has 4)" "$TMP/e" && pass "resume refuses another rank" ||
        fail "rank mismatch message: $(cat "$TMP/e")"; }

# kill -9 at random moments of a run that checkpoints every step: the latest checkpoint is whole and resumes
for delay in 0.4 0.8 1.2; do
    rm -rf "$TMP/killed"
    "$BIN" finetune "$BASE" "${common[@]}" --lora --steps 300 --ckpt-every 1 --out "$TMP/killed" >/dev/null 2>&1 &
    pid=$!
    sleep $delay
    kill -9 $pid 2>/dev/null
    wait $pid 2>/dev/null
    [ -f "$TMP/killed/latest" ] || continue
    ck="$TMP/killed/$(cat "$TMP/killed/latest")"
    [ -f "$ck/adapter_model.safetensors" ] && [ -f "$ck/optimizer.safetensors" ] && [ -f "$ck/trainer_state.json" ] ||
        fail "checkpoint after kill -9 at ${delay}s is incomplete"
done
if [ -f "$TMP/killed/latest" ]; then
    step=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["step"])' "$TMP/killed/$(cat "$TMP/killed/latest")/trainer_state.json")
    "$BIN" finetune "$BASE" "${common[@]}" --lora --steps $((step + 2)) --resume --out "$TMP/killed" >/dev/null 2>"$TMP/ek" &&
        pass "resume after kill -9 (from step $step)" || fail "resume after kill -9: $(cat "$TMP/ek")"
fi

# PEFT files exactly as PEFT writes them
python3 - "$TMP/lora" <<'EOF' && pass "PEFT adapter files" || fail "PEFT adapter files"
import json, struct, sys
d = sys.argv[1]
cfg = json.load(open(f"{d}/adapter_config.json"))
assert cfg["peft_type"] == "LORA" and cfg["task_type"] == "CAUSAL_LM" and cfg["r"] == 8 and cfg["lora_alpha"] == 16
assert sorted(cfg["target_modules"]) == sorted(["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
assert cfg["bias"] == "none" and cfg["use_rslora"] is False and abs(cfg["lora_dropout"] - 0.05) < 1e-6
f = open(f"{d}/adapter_model.safetensors", "rb")
n = struct.unpack("<Q", f.read(8))[0]
h = json.loads(f.read(n))
meta = h.pop("__metadata__")
assert meta == {"format": "pt"}, meta
assert len(h) == 5 * 7 * 2, len(h)
dims = {"q_proj": (64, 64), "k_proj": (32, 64), "v_proj": (32, 64), "o_proj": (64, 64), "gate_proj": (172, 64), "up_proj": (172, 64), "down_proj": (64, 172)}
for l in range(5):
    for m, (out, inp) in dims.items():
        grp = "self_attn" if m in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
        a = h[f"base_model.model.model.layers.{l}.{grp}.{m}.lora_A.weight"]
        b = h[f"base_model.model.model.layers.{l}.{grp}.{m}.lora_B.weight"]
        assert a["dtype"] == "F32" and a["shape"] == [8, inp], (m, a)
        assert b["dtype"] == "F32" and b["shape"] == [out, 8], (m, b)
EOF

# merge then generate == generate --adapter (greedy)
"$BIN" merge "$BASE" "$TMP/lora" "$TMP/merged" --tokenizer "$TOK" >/dev/null 2>&1 || fail "merge"
"$BIN" generate "$BASE" --tokenizer "$TOK" --adapter "$TMP/lora" -p "Once upon a time" -n 40 --temperature 0 >"$TMP/g1" 2>/dev/null
"$BIN" generate "$TMP/merged" -p "Once upon a time" -n 40 --temperature 0 >"$TMP/g2" 2>/dev/null
[ -s "$TMP/g1" ] && cmp -s "$TMP/g1" "$TMP/g2" && pass "merge then generate == generate --adapter" ||
    { fail "merged text differs"; diff "$TMP/g1" "$TMP/g2" | head -4 >&2; }

# QLoRA: the llama2.c base quantized to NF4 as it loads; and from an NF4 folder
"$BIN" finetune "$BASE" "${common[@]}" --qlora --steps 4 --out "$TMP/qlora" >/dev/null 2>"$TMP/q.err" &&
    [ -f "$TMP/qlora/adapter_model.safetensors" ] && pass "finetune --qlora (quantized as it loads)" || fail "qlora: $(cat "$TMP/q.err")"
"$BIN" quantize "$BASE" "$TMP/nf4" --type nf4 --tokenizer "$TOK" >/dev/null 2>&1 || fail "quantize nf4"
"$BIN" finetune "$TMP/nf4" --data "$ALPACA" --template alpaca --batch 2 --seq 128 --qlora --steps 4 --out "$TMP/qlora2" -t 1 \
    >/dev/null 2>"$TMP/q2.err" && pass "finetune --qlora from an NF4 folder" || fail "qlora from NF4: $(cat "$TMP/q2.err")"
# the same NF4 linears either way (the folder's BF16 embeddings and head aside): first losses agree closely
python3 - "$TMP/qlora/log.jsonl" "$TMP/qlora2/log.jsonl" <<'EOF' && pass "QLoRA: quantized on load ~ NF4 folder" || fail "QLoRA losses differ"
import json, sys
a, b = ([json.loads(l)["loss"] for l in open(p) if '"loss"' in l] for p in sys.argv[1:3])
assert len(a) == len(b) == 4 and abs(a[0] - b[0]) < 0.01 * a[0], (a, b)
EOF

# full fine-tuning writes an HF folder that generates
"$BIN" finetune "$BASE" "${common[@]}" --steps 4 --out "$TMP/full" >/dev/null 2>&1 && [ -f "$TMP/full/model.safetensors" ] &&
    "$BIN" generate "$TMP/full" -n 8 --temperature 0 -p "Once" >/dev/null 2>&1 && pass "full fine-tuning" || fail "full fine-tuning"

# ShareGPT conversations with the vicuna template
"$BIN" finetune "$BASE" --tokenizer "$TOK" --data "$SHAREGPT" --template vicuna --lora --steps 3 --batch 2 --seq 128 \
    --out "$TMP/vicuna" -t 1 >/dev/null 2>"$TMP/v.err" && pass "ShareGPT + vicuna" || fail "sharegpt: $(cat "$TMP/v.err")"

# bad input
printf '{"instruction": "a", "output": "b"}\n{"instruction": 3, "output": "b"}\n' >"$TMP/bad.jsonl"
"$BIN" finetune "$BASE" --tokenizer "$TOK" --data "$TMP/bad.jsonl" --template alpaca --lora --steps 1 --out "$TMP/bad" >"$TMP/e1" 2>&1 &&
    fail "malformed record accepted" || { grep -q "bad.jsonl:2:" "$TMP/e1" && pass "malformed record names FILE:LINE" || fail "message: $(cat "$TMP/e1")"; }
"$BIN" init --shape stories15M --random "$TMP/other" >/dev/null 2>&1
"$BIN" merge "$TMP/other" "$TMP/lora" "$TMP/m2" >"$TMP/e2" 2>&1 && fail "adapter for another base accepted" ||
    { grep -q "lora_A\|lora_B\|shape" "$TMP/e2" && pass "adapter for another base refused" || fail "message: $(cat "$TMP/e2")"; }
"$BIN" finetune "$BASE" "${common[@]}" --lora --qlora --steps 1 --out "$TMP/x" >/dev/null 2>&1 && fail "--lora --qlora accepted" ||
    pass "--lora and --qlora are exclusive"
"$BIN" finetune "$BASE" "${common[@]}" --lora --lora-targets q_proj,nope --steps 1 --out "$TMP/x" >"$TMP/e3" 2>&1 &&
    fail "bad target accepted" || { grep -q "unknown LoRA target" "$TMP/e3" && pass "bad target" || fail "message: $(cat "$TMP/e3")"; }
"$BIN" finetune --help | grep -q -- "--lora-targets" && pass "help" || fail "help"
finish
