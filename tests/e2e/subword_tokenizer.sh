#!/usr/bin/env bash
# A SentencePiece tokenizer through the command line:
#  - `loco tokenize --tokenizer bpe` trains a model on the training part, writes uint16 shards
#    and the model; `--tokenizer MODEL` reproduces the same shards; option errors exit 2;
#  - `loco train` with data.tokenizer: the run keeps a copy of the model, validation records
#    and the summary carry bits per byte; a model.vocab_size below the tokenizer's is refused
#    before anything is written;
#  - `loco eval --text` encodes with the run's tokenizer (the same loss as the shard);
#  - `loco export-hf` writes tokenizer.model + tokenizer_config.json beside the weights, and the
#    SentencePiece reference (Debian's python3-sentencepiece) encodes text to the very ids of
#    loco's shards with it. transformers is not packaged for Debian 12: when it is importable,
#    AutoTokenizer is checked too.
# Usage: subword_tokenizer.sh <path to loco> <source dir>
set -euo pipefail
LOCO=$(realpath "$1")
SRC=$(realpath "$2")
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMP_NUM_THREADS=1
PY=/usr/bin/python3
T=$(mktemp -d)
trap 'rm -rf "$T"' EXIT
cd "$T"
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

head -c 150000 "$SRC/data/kjv.txt" >"$T/text.txt"
echo >>"$T/text.txt"

# ---------------------------------------------------------------- tokenize
"$LOCO" tokenize "$T/text.txt" --train "$T/train.bin" --val "$T/val.bin" --val-fraction 0.1 \
  --tokenizer bpe --vocab-size 400 --model-out "$T/bpe.model" >"$T/tok.out" 2>&1 ||
  fail "tokenize --tokenizer bpe: $(cat "$T/tok.out")"
grep -q "vocab 400, uint16 shards" "$T/tok.out" || fail "tokenize output: $(cat "$T/tok.out")"
grep -q "round trip exact" "$T/tok.out" || fail "no round-trip confirmation"
[[ -s $T/bpe.model ]] || fail "no model written"
magic=$(od -An -t d4 -N 4 "$T/train.bin" | tr -d ' ')
[[ $magic == 20240520 ]] || fail "train shard magic $magic, expected the uint16 format"
"$LOCO" tokenize "$T/text.txt" --train "$T/train2.bin" --val "$T/val2.bin" --val-fraction 0.1 \
  --tokenizer "$T/bpe.model" >/dev/null 2>&1 || fail "tokenize with an existing model"
cmp -s "$T/train.bin" "$T/train2.bin" && cmp -s "$T/val.bin" "$T/val2.bin" ||
  fail "the existing model gives other shards than the trained one"
expect_2() {  # what, grep pattern, command...
  local what=$1 pattern=$2 rc=0
  shift 2
  "$@" >"$T/err.out" 2>&1 || rc=$?
  [[ $rc -eq 2 ]] || fail "$what: exit $rc, expected 2"
  grep -q -- "$pattern" "$T/err.out" || fail "$what: message lacks '$pattern': $(cat "$T/err.out")"
}
expect_2 "bpe without --model-out" "--model-out" \
  "$LOCO" tokenize "$T/text.txt" --train "$T/x.bin" --tokenizer bpe --vocab-size 400
expect_2 "bpe without --vocab-size" "--vocab-size" \
  "$LOCO" tokenize "$T/text.txt" --train "$T/x.bin" --tokenizer unigram --model-out "$T/u.model"
expect_2 "a missing model" "cannot open" \
  "$LOCO" tokenize "$T/text.txt" --train "$T/x.bin" --tokenizer "$T/none.model"
[[ ! -e $T/x.bin ]] || fail "a failed tokenize wrote a shard"

# ---------------------------------------------------------------- train with it
TINY=(--set model.d_model=32 --set model.n_layers=2 --set model.n_heads=2
      --set model.n_kv_heads=1 --set model.d_ff=64 --set model.max_seq_len=32
      --set training.seq_len=32 --set training.micro_batch=2 --set schedule.warmup_steps=1
      --set training.eval_batches=2 --set training.steps=6 --set training.eval_interval=3
      --set checkpoint.interval=6 --set data.train="$T/train.bin" --set data.val="$T/val.bin")
"$LOCO" train "$SRC/configs/tiny.json" --out "$T/run" "${TINY[@]}" --set model.vocab_size=400 \
  --set data.tokenizer="$T/bpe.model" >"$T/train.out" 2>&1 || fail "train: $(tail "$T/train.out")"
cmp -s "$T/bpe.model" "$T/run/tokenizer.model" || fail "the run has no copy of its tokenizer"
$PY - "$T/run" <<'PY' || fail "bits per byte missing or wrong in the run's records"
import json, math, sys
run = sys.argv[1]
s = json.load(open(run + "/summary.json"))
assert s["tokenizer"]["kind"] == "sentencepiece" and s["tokenizer"]["vocab_size"] == 400, s
bpt = s["val_bytes_per_token"]
assert 1.5 < bpt < 6, bpt  # subwords: several bytes per token
assert math.isclose(s["final_val_bpb"], s["final_val_loss"] / (math.log(2) * bpt)), s
vals = [json.loads(l) for l in open(run + "/metrics.jsonl") if "val_loss" in l]
assert len(vals) == 2 and all("val_bpb" in v for v in vals), vals
cfg = json.load(open(run + "/config.json"))
assert cfg["data"]["tokenizer"].endswith("bpe.model"), cfg["data"]
PY
expect_2 "vocab below the tokenizer's" "smaller than the vocabulary of data.tokenizer" \
  "$LOCO" train "$SRC/configs/tiny.json" --out "$T/small" "${TINY[@]}" \
  --set model.vocab_size=300 --set data.tokenizer="$T/bpe.model"
[[ ! -e $T/small ]] || fail "a refused config created its run directory"

# ---------------------------------------------------------------- eval --text
tail -c 20000 "$T/text.txt" >"$T/snippet.txt"
"$LOCO" eval "$T/run" --text "$T/snippet.txt" --seq-len 32 >"$T/eval-text.json" 2>"$T/eval.err" ||
  fail "eval --text: $(cat "$T/eval.err")"
"$LOCO" tokenize "$T/snippet.txt" --train "$T/snippet.bin" --tokenizer "$T/bpe.model" >/dev/null 2>&1
"$LOCO" eval "$T/run" --data "$T/snippet.bin" --seq-len 32 >"$T/eval-data.json" 2>"$T/eval.err" ||
  fail "eval --data: $(cat "$T/eval.err")"
$PY - "$T/eval-text.json" "$T/eval-data.json" <<'PY' || fail "eval --text differs from the shard"
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:])
assert a["tokenizer"].endswith("tokenizer.model"), a
assert a["loss"] == b["loss"] and a["tokens_evaluated"] == b["tokens_evaluated"], (a, b)
assert a["bits_per_byte"] == b["bits_per_byte"] > 0, (a, b)
PY

# ---------------------------------------------------------------- export-hf
"$LOCO" export-hf "$T/run" "$T/hf" >"$T/export.out" 2>&1 || fail "export-hf: $(cat "$T/export.out")"
for f in config.json model.safetensors tokenizer.model tokenizer_config.json special_tokens_map.json; do
  [[ -f $T/hf/$f ]] || fail "export-hf did not write $f"
done
cmp -s "$T/bpe.model" "$T/hf/tokenizer.model" || fail "exported tokenizer.model differs"
$PY - "$T/hf" "$T/snippet.txt" "$T/snippet.bin" <<'PY' || fail "the reference SentencePiece disagrees"
import json, struct, sys
import sentencepiece as spm
hf, text_path, shard = sys.argv[1:]
sp = spm.SentencePieceProcessor(model_file=hf + "/tokenizer.model")
text = open(text_path, encoding="utf-8").read()
raw = open(shard, "rb").read()
header = struct.unpack("<256i", raw[:1024])
assert header[0] == 20240520, header[:3]
ids = list(struct.unpack(f"<{header[2]}H", raw[1024:1024 + 2 * header[2]]))
assert sp.encode(text) == ids, "ids differ"
assert sp.decode(ids) == text
cfg = json.load(open(hf + "/tokenizer_config.json"))
assert cfg["tokenizer_class"] == "LlamaTokenizer" and cfg["add_bos_token"] is False, cfg
assert sp.get_piece_size() <= json.load(open(hf + "/config.json"))["vocab_size"]
try:
    import transformers
except ImportError:
    sys.exit(0)
tok = transformers.AutoTokenizer.from_pretrained(hf, use_fast=False)
assert tok(text)["input_ids"] == ids
PY
# A byte-level model: weights only, and it says why.
"$LOCO" train "$SRC/configs/tiny.json" --out "$T/byte-run" "${TINY[@]}" \
  --set data.train="$SRC/data/kjv-val.bin" --set data.val="" >/dev/null 2>&1 || fail "byte run"
"$LOCO" export-hf "$T/byte-run" "$T/byte-hf" >"$T/export2.out" 2>&1 || fail "byte export-hf"
[[ ! -e $T/byte-hf/tokenizer.model ]] || fail "a byte model got a tokenizer.model"
grep -q "byte-level model" "$T/export2.out" || fail "byte export does not say why: $(cat "$T/export2.out")"

if ((fails)); then
  echo "$fails check(s) failed"
  exit 1
fi
echo "subword tokenizer: all checks passed"
