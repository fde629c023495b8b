#!/usr/bin/env bash
# End-to-end checks of the pst command: bad configs and data fail before any
# work with clear messages; params, train, eval, predict and debug grads work
# on real data. Usage: cli_test.sh PATH_TO_PST
set -uo pipefail
PST=$1
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
source "$(dirname "$0")/check.sh"

# run EXPECTED_CODE LOGFILE CMD...: runs with a time bound, checks the exit code.
run() {
  local want=$1 log=$2
  shift 2
  timeout 300 "$@" >"$log" 2>&1
  local got=$?
  if [[ $got -ne $want ]]; then
    echo "exit code $got (want $want) from: $*"
    tail -5 "$log"
    return 1
  fi
}

# What the command says about itself. The version names the commit that git
# reports for this tree (the build records it; "unknown" outside git).
commit=$(git -C "$ROOT" describe --always --dirty --abbrev=12 --exclude='*' 2>/dev/null || echo unknown)
check "--version" run 0 "$TMP/v" "$PST" --version
check "--version names the version and the commit" contains "$TMP/v" "pst [0-9]*\.[0-9]*\.[0-9]* (commit $commit)"
# It names OpenBLAS's kernels too: on a CPU with AVX2 and FMA (the kernel's
# flags say) ones with AVX2 or AVX-512, whatever OpenBLAS chose for itself
# (core/cpus.h). Debian 12's chose its SSE3 ones on an Emerald Rapids Xeon.
if grep -m1 '^flags' /proc/cpuinfo | grep -qw avx2 && grep -m1 '^flags' /proc/cpuinfo | grep -qw fma; then
  check "--version, OpenBLAS choosing" run 0 "$TMP/v2" env -u OPENBLAS_CORETYPE -u PST_OPENBLAS_OWN_CHOICE "$PST" --version
  check "--version: OpenBLAS kernels with AVX2 or AVX-512 on this CPU" \
    contains "$TMP/v2" "OpenBLAS kernels: \(Haswell\|Zen\|SkylakeX\|Cooperlake\|SapphireRapids\)$"
fi
# Usage errors exit 2 and name the nearest command.
check "a misspelt command" run 2 "$TMP/u1" "$PST" trian --config x
check "a misspelt command is named" contains "$TMP/u1" "unknown command 'trian'; did you mean 'train'?"
check "a misspelt subcommand" run 2 "$TMP/u2" "$PST" checkpoint inspekt x
check "a misspelt subcommand is named" contains "$TMP/u2" "pst checkpoint: unknown command 'inspekt'; did you mean 'inspect'?"
check "a command pst does not have, with --help" run 2 "$TMP/u3" "$PST" serve --help
check "it is not mistaken for another" contains "$TMP/u3" "unknown command 'serve'\$"
check "no command" run 2 "$TMP/u4" "$PST"
check "an unknown option" run 2 "$TMP/u5" "$PST" eval --model m --bogus
check "a missing option" run 2 "$TMP/u6" "$PST" train
check "--help" run 0 "$TMP/u7" "$PST" eval --help
check "--help shows defaults" contains "$TMP/u7" "--beam INT=1"
# pst config defaults: a job file of every default, each key documented.
check "config defaults" run 0 "$TMP/defaults.toml" "$PST" config defaults
check "config defaults documents a key" contains "$TMP/defaults.toml" "# optimizer steps to run"
check "the defaults are a job file" run 0 "$TMP/d1" "$PST" config show --config "$TMP/defaults.toml"
check "which reads back as itself" cmp "$TMP/defaults.toml" "$TMP/d1"
check "config show applies --set" run 0 "$TMP/d2" "$PST" config show --config "$ROOT/configs/g2p-tiny.toml" --set train.steps=7
check "config show prints the resolved value" contains "$TMP/d2" "^steps = 7$"

# Bad configurations fail with exit code 2 and name the key.
printf '[model]\nheadz = 3\n' >"$TMP/bad1.toml"
check "unknown key" run 2 "$TMP/o1" "$PST" train --config "$TMP/bad1.toml"
check "unknown key message" contains "$TMP/o1" "unknown key 'headz' in \[model\]"
check "heads divisibility" run 2 "$TMP/o2" "$PST" train --config "$ROOT/configs/g2p-tiny.toml" --set model.heads=5
check "heads divisibility message" contains "$TMP/o2" "not divisible by model.heads = 5"
check "wrong type" run 2 "$TMP/o3" "$PST" train --config "$ROOT/configs/g2p-tiny.toml" --set train.steps=many
check "wrong type message" contains "$TMP/o3" "train.steps: expected an integer, got 'many'"
check "missing data" run 2 "$TMP/o4" "$PST" train --config "$ROOT/configs/g2p-tiny.toml" --set data.path="$TMP/none.dict"
check "missing data message" contains "$TMP/o4" "$TMP/none.dict"
check "missing config" run 2 "$TMP/o5" "$PST" train --config "$TMP/none.toml"
check "a model larger than memory" run 2 "$TMP/o6" "$PST" train --config "$ROOT/configs/g2p-tiny.toml" \
  --set model.d_model=65536 --set model.heads=1024 --set model.ffn_dim=1048576 --set model.encoder_layers=1024 \
  --set model.decoder_layers=1024 --set train.output="$TMP/huge"
check "a model larger than memory: message" contains "$TMP/o6" "GiB of memory"
check "a directory as --config" run 2 "$TMP/o7" "$PST" train --config "$TMP"
check "a directory as --config: message" contains "$TMP/o7" "is a directory"
check "workers that join, in a one-process job" run 2 "$TMP/o8" "$PST" train --config "$ROOT/configs/g2p-tiny.toml" \
  --set cluster.max_workers=3 --set train.output="$TMP/o8-out"
check "workers that join, in a one-process job: message" contains "$TMP/o8" \
  "workers join a running job only when its processes start with --role"
check "no output dir was created for failed jobs" test ! -e runs/g2p-tiny

# Devices. CUDA_VISIBLE_DEVICES="" hides every GPU, so these hold on any
# machine: auto falls back to the CPU with a log line saying why, cuda is an
# error that names the device and what else is allowed, and a malformed
# device is a config error.
check "device auto falls back" run 0 "$TMP/d1" env CUDA_VISIBLE_DEVICES= \
  "$PST" train --config "$ROOT/configs/g2p-tiny.toml" --device auto --set train.steps=2 \
  --set train.eval_every=0 --set data.eval_max_examples=4 --set train.output="$TMP/auto"
check "device auto says why" contains "$TMP/d1" "device auto: no CUDA device (.*); using the CPU"
check "device auto trained on the cpu" contains "$TMP/d1" "backend cpu"
check "device cuda without a GPU" run 2 "$TMP/d2" env CUDA_VISIBLE_DEVICES= \
  "$PST" train --config "$ROOT/configs/g2p-tiny.toml" --device cuda
check "device cuda message" contains "$TMP/d2" 'train.device = "cuda": no CUDA device'
check "device cuda message offers cpu" contains "$TMP/d2" "use auto or cpu"
check "bad device" run 2 "$TMP/d3" "$PST" train --config "$ROOT/configs/g2p-tiny.toml" --device gpu0
check "bad device message" contains "$TMP/d3" 'train.device = "gpu0": allowed are auto, cpu, cuda and cuda:N'

# params: the components add up to the total, and --list shows every tensor.
check "params" run 0 "$TMP/p" "$PST" params --config "$ROOT/configs/g2p-small.toml" --list
sum=$(awk '$1 ~ /^(embeddings|positions|attention|ffn|norms|output)$/ {s += $2} END {print s}' "$TMP/p")
total=$(awk '$1 == "total" {print $2}' "$TMP/p")
check "params components sum to total ($sum vs $total)" test "$sum" = "$total"
tensors=$(grep -c -E '^[a-z_.0-9]+\.(weight|bias|in_proj_weight|in_proj_bias) ' "$TMP/p")
check "params lists 93 tensors (got $tensors)" test "$tensors" -eq 93
# At the size bounds the counts are exact (they used to overflow int64): the
# feed-forward blocks of 2 x 1024 layers hold 2048 x (2 d f + f + d).
check "params at the size bounds" run 0 "$TMP/pmax" "$PST" params --config "$ROOT/configs/g2p-tiny.toml" \
  --set model.d_model=65536 --set model.ffn_dim=1048576 --set model.heads=1024 --set model.encoder_layers=1024 \
  --set model.decoder_layers=1024
ffn=$(awk '$1 == "ffn" {print $2}' "$TMP/pmax")
check "ffn parameters at the bounds are 2048 (2 d f + f + d) ($ffn)" \
  test "$ffn" = "$(python3 -c 'd, f = 65536, 1048576; print(2048 * (2 * d * f + f + d))')"
max_total=$(awk '$1 == "total" {print $2}' "$TMP/pmax")
check "and the total is positive ($max_total)" test "${max_total:-0}" -gt 0

# A short G2P training run writes a model that predict can load.
check "train g2p" run 0 "$TMP/t" "$PST" train --config "$ROOT/configs/g2p-tiny.toml" \
  --set train.steps=40 --set train.output="$TMP/g2p" --set train.eval_every=20 --set data.eval_max_examples=100
check "train wrote the model" test -s "$TMP/g2p/model.safetensors"
check "train logged a test WER" grep -q '"kind":"test".*"wer"' "$TMP/g2p/metrics.jsonl"
check "train logged validation twice" test "$(grep -c '"kind":"valid"' "$TMP/g2p/metrics.jsonl")" -eq 2
# config.json and vocab.json beside the model agree with the model file's
# own tensors and metadata (read here from the safetensors header).
check "config.json and vocab.json describe the model" python3 -c "
import json, struct
d = '$TMP/g2p'
with open(d + '/model.safetensors', 'rb') as f:
    (n,) = struct.unpack('<Q', f.read(8))
    header = json.loads(f.read(n))
card, vocab = json.load(open(d + '/config.json')), json.load(open(d + '/vocab.json'))
meta = header['__metadata__']
assert card['task'] == 'g2p' and card['model']['d_model'] == 64 and card['model']['kind'] == 'encoder_decoder', card
assert card['src_vocab_size'] == header['src_embed.weight']['shape'][0] == len(vocab['letters']), card
assert card['tgt_vocab_size'] == header['tgt_embed.weight']['shape'][0] == len(vocab['phones']), card
assert vocab['phones'] == json.loads(meta['phones']) and vocab['letters'] == json.loads(meta['letters'])
assert card['tied_output'] == 'tgt_embed.weight' and 'output.weight' not in header
assert vocab['phones'][:4] == ['<pad>', '<s>', '</s>', '<unk>'] and card['special_tokens']['</s>'] == 2
"
# Early stopping and the best model, with 2 workers as threads (the lead's
# stop request crosses ZeroMQ to the server): g2p-tiny overfits its 64 words,
# so the validation loss is lowest early and two worse ones end the job.
check "train with patience and keep_best" run 0 "$TMP/tes" "$PST" train --config "$ROOT/configs/g2p-tiny.toml" \
  --set cluster.in_process=threads --set cluster.workers=2 --set train.eval_every=25 --set train.patience=2 \
  --set train.keep_best=true --set train.best_metric=loss --set data.test_max_examples=20 --set train.output="$TMP/g2p-es"
check "early stopping ended it" contains "$TMP/tes" "early stopping ended training after step"
check "the best weights are the model" cmp -s "$TMP/g2p-es/model.safetensors" "$TMP/g2p-es/best.safetensors"
check "the test row names the step of the lowest validation loss" python3 -c "
import json, sys
rows = [json.loads(l) for l in open('$TMP/g2p-es/metrics.jsonl')]
valid = [r for r in rows if r['kind'] == 'valid']
test = [r for r in rows if r['kind'] == 'test'][0]
best = min(valid, key=lambda r: r['loss'])
sys.exit(0 if test['weights_step'] == best['step'] < valid[-1]['step'] < 300 else 1)"
# train.epochs sets train.steps from the data: 64 words in batches of 16, 2
# workers; and a warmup longer than the steps is named.
check "train by epochs" run 0 "$TMP/tep" "$PST" train --config "$ROOT/configs/g2p-tiny.toml" \
  --set cluster.workers=2 --set train.epochs=2 --set data.batch_size=16 --set train.eval_every=0 \
  --set train.test_at_end=false --set train.output="$TMP/g2p-ep"
check "epochs resolve to steps" contains "$TMP/tep" "train.epochs = 2: [0-9]* batches of 16 per epoch, 2 per step"
steps=$(grep -o 'train.steps = 2 x [0-9]* = [0-9]*' "$TMP/tep" | awk '{print $NF}')
check "the job ran them (${steps:-?} steps)" contains "$TMP/tep" "step ${steps:-?}/${steps:-?} "
check "a warmup past the steps is named" contains "$TMP/tep" "schedule.warmup_steps = 20 is more than train.steps"

check "predict" run 0 "$TMP/pr" "$PST" predict --model "$TMP/g2p/model.safetensors" Hello world
check "predict prints a line per word" test "$(grep -c "$(printf '\t')" "$TMP/pr")" -eq 2
check "predict echoes the word" contains "$TMP/pr" "^Hello	"
# Words from a file and from standard input (blank lines, CRs and a UTF-8
# byte order mark, as a Windows editor writes it, skipped), after those given
# as arguments; with neither, words piped in; none at all is an error.
printf '\xef\xbb\xbfzebra\r\n\nhello\n' >"$TMP/words.txt"
check "predict --input FILE" run 0 "$TMP/prf" "$PST" predict --model "$TMP/g2p/model.safetensors" \
  --input "$TMP/words.txt" first
check "predict --input FILE answers each word in order" \
  test "$(grep "$(printf '\t')" "$TMP/prf" | cut -f1 | tr '\n' ' ')" = "first zebra hello "
check "predict --input -" run 0 "$TMP/prs" bash -c "printf 'world\n' | '$PST' predict \
  --model '$TMP/g2p/model.safetensors' --input -"
check "predict --input - reads standard input" contains "$TMP/prs" "^world	"
check "predict with no words or --input reads words piped in" run 0 "$TMP/prp" bash -c "printf 'world\nzebra\n' | \
  '$PST' predict --model '$TMP/g2p/model.safetensors'"
check "and answers each of them in order" \
  test "$(grep "$(printf '\t')" "$TMP/prp" | cut -f1 | tr '\n' ' ')" = "world zebra "
check "predict with no words" run 2 "$TMP/prn" "$PST" predict --model "$TMP/g2p/model.safetensors" </dev/null
check "predict with no words says so" contains "$TMP/prn" "no words or prompts"
check "predict with an empty word" run 2 "$TMP/pre" "$PST" predict --model "$TMP/g2p/model.safetensors" hello ""
check "predict with an empty word names it" contains "$TMP/pre" "word 2 of 2 is empty"

# eval: the validation metrics of the model are those train logged at its end.
check "eval" run 0 "$TMP/ev" "$PST" eval --model "$TMP/g2p/model.safetensors" --split valid --max-examples 100 \
  --predictions "$TMP/pred.txt"
want=$(grep '"kind":"valid"' "$TMP/g2p/metrics.jsonl" | tail -n 1 | python3 -c 'import json,sys; r=json.load(sys.stdin); print("PER %.2f%%  WER %.2f%%  (%d words)" % (100*r["per"], 100*r["wer"], r["words"]))')
check "eval prints train's last validation PER and WER ($want)" contains "$TMP/ev" "$want"
check "eval wrote a prediction per word" test "$(wc -l <"$TMP/pred.txt")" -eq 100
check "eval --beam 1" run 0 "$TMP/ev1" "$PST" eval --model "$TMP/g2p/model.safetensors" --split valid --max-examples 100 \
  --beam 1 --predictions "$TMP/pred1.txt"
check "beam 1 predicts what greedy decoding does" cmp -s "$TMP/pred.txt" "$TMP/pred1.txt"
check "eval --beam 3" run 0 "$TMP/ev3" "$PST" eval --model "$TMP/g2p/model.safetensors" --split valid --beam 3 \
  --max-examples 50
check "eval --beam 3 decodes 50 words" contains "$TMP/ev3" "(50 words)"
check "eval logs the time of each pass" contains "$TMP/ev3" "valid: scoring took [0-9.]* s, decoding [0-9.]* s"
# Decoding keeps keys and values from step to step; --no-cache re-runs the
# prefix at every step, and predicts the same.
check "eval --no-cache" run 0 "$TMP/evn" "$PST" eval --model "$TMP/g2p/model.safetensors" --split valid \
  --max-examples 100 --no-cache --predictions "$TMP/pred-nc.txt"
check "the cache predicts what re-running every prefix does" cmp -s "$TMP/pred.txt" "$TMP/pred-nc.txt"
# Greedy evaluation does not decode the words whose output the teacher-forced
# pass shows; --decode-all decodes them too, and predicts the same.
check "eval --decode-all" run 0 "$TMP/eva" "$PST" eval --model "$TMP/g2p/model.safetensors" --split valid \
  --max-examples 100 --decode-all --predictions "$TMP/pred-all.txt"
check "--decode-all decodes every word" contains "$TMP/eva" "(100 of 100 words decoded"
check "eval says how many words it decoded" contains "$TMP/ev" "([0-9]* of 100 words decoded"
check "words shown by the teacher-forced pass are predicted as decoding does" \
  cmp -s "$TMP/pred.txt" "$TMP/pred-all.txt"
check "eval --beam 3 with and without the cache" run 0 "$TMP/ev3c" bash -c "
  '$PST' eval --model '$TMP/g2p/model.safetensors' --split valid --beam 3 --max-examples 50 --predictions '$TMP/b3.txt' &&
  '$PST' eval --model '$TMP/g2p/model.safetensors' --split valid --beam 3 --max-examples 50 --predictions '$TMP/b3nc.txt' --no-cache"
check "beam 3 predicts the same with and without the cache" cmp -s "$TMP/b3.txt" "$TMP/b3nc.txt"
check "bad beam" run 2 "$TMP/ev4" "$PST" eval --model "$TMP/g2p/model.safetensors" --beam 0
check "bad beam message" contains "$TMP/ev4" "--beam 0: must be in \[1, 1024\]"
check "huge beam" run 2 "$TMP/ev6" "$PST" eval --model "$TMP/g2p/model.safetensors" --beam 1000000
check "bad split" run 2 "$TMP/ev5" "$PST" eval --model "$TMP/g2p/model.safetensors" --split dev
check "bad split message" contains "$TMP/ev5" "--split dev: must be train, valid, test or all"

# A lexicon of one's own: CMUdict's first 2,000 entries rewritten as
# word<TAB>phones with IPA-like phones and accented words, read without
# naming its format; predict warns about a letter the model never saw.
python3 - "$TMP/lex.tsv" <<'PY'
import re, sys
ipa = {"aa": "\u0251", "ae": "\u00e6", "ah": "\u028c", "ax": "\u0259", "eh": "\u025b", "ih": "\u026a", "ng": "\u014b"}
out = open(sys.argv[1], "w", encoding="utf-8")
for i, line in enumerate(open("/usr/share/festival/dicts/cmu/cmudict-0.4.out", encoding="latin-1")):
    m = re.match(r'\("([^"]+)" \S+ (.*)\)$', line.strip())
    if not m or i > 2000:
        continue
    word = m.group(1).lower().replace("e", "\u00e9", 1 if i % 3 == 0 else 0)
    phones = [ipa.get(p, p) for p in re.findall(r"[a-z]+", m.group(2))]
    out.write(word + "\t" + " ".join(phones) + "\n")
PY
check "train on a tsv lexicon" run 0 "$TMP/tt" "$PST" train --config "$ROOT/configs/g2p-tiny.toml" \
  --set data.path="$TMP/lex.tsv" --set data.max_examples=0 --set train.steps=5 --set train.eval_every=0 \
  --set data.test_max_examples=20 --set train.output="$TMP/g2p-tsv"
check "the format was detected" contains "$TMP/tt" "(tsv format)"
check "its letters include the accented one" python3 -c "
import json, struct, sys
f = open('$TMP/g2p-tsv/model.safetensors', 'rb'); n = struct.unpack('<Q', f.read(8))[0]
meta = json.loads(f.read(n))['__metadata__']
sys.exit(0 if '\u00e9' in json.loads(meta['letters']) else 1)"
check "predict with an unseen letter" run 0 "$TMP/prt" "$PST" predict --model "$TMP/g2p-tsv/model.safetensors" søn
check "predict names the unseen letter" contains "$TMP/prt" "'ø' is not among the model's"
check "a tsv read as Festival's is an error" run 2 "$TMP/ttf" "$PST" train --config "$ROOT/configs/g2p-tiny.toml" \
  --set data.path="$TMP/lex.tsv" --set data.format=festival --set train.output="$TMP/g2p-tsv2"
check "that error names the format expected" contains "$TMP/ttf" "data.format = festival: expected"

# Split files of one's own (data.train, valid, test) are read whole, whatever
# the hash would say: the lexicon's first 1,500 lines train, the next 300
# validate, the rest test.
head -n 1500 "$TMP/lex.tsv" >"$TMP/own-train.tsv"
sed -n 1501,1800p "$TMP/lex.tsv" >"$TMP/own-valid.tsv"
tail -n +1801 "$TMP/lex.tsv" >"$TMP/own-test.tsv"
words() { cut -f1 "$1" | sort -u | wc -l; }
nt=$(words "$TMP/own-train.tsv") nv=$(words "$TMP/own-valid.tsv") ns=$(words "$TMP/own-test.tsv")
check "train on split files" run 0 "$TMP/tsp" "$PST" train --config "$ROOT/configs/g2p-tiny.toml" \
  --set data.train="$TMP/own-train.tsv" --set data.valid="$TMP/own-valid.tsv" --set data.test="$TMP/own-test.tsv" \
  --set data.max_examples=0 --set train.steps=5 --set train.eval_every=0 --set train.output="$TMP/g2p-own"
check "each split is its file ($nt / $nv / $ns words)" contains "$TMP/tsp" "($nt train / $nv valid / $ns test)"
check "eval --split all" run 0 "$TMP/eva" "$PST" eval --model "$TMP/g2p-own/model.safetensors" --split all
check "eval --split all reports each split" test "$(grep -cE ' (train|valid|test): loss' "$TMP/eva")" -eq 3
check "and their union ($((nt + nv + ns)) words)" contains "$TMP/eva" " all: loss .*($((nt + nv + ns)) words)"
check "the test line is test's alone ($ns words)" contains "$TMP/eva" " test: loss .*($ns words)"
check "data.path with data.train is an error" run 2 "$TMP/tsb" "$PST" train --config "$ROOT/configs/g2p-tiny.toml" \
  --set data.path="$TMP/lex.tsv" --set data.train="$TMP/own-train.tsv" --set train.output="$TMP/g2p-own2"
check "that error says to set one" contains "$TMP/tsb" "set one"
# Another lexicon is evaluated whole, with the model's vocabularies: the
# CMUdict model meets accented letters and IPA phones, and says so.
check "eval --data another lexicon" run 0 "$TMP/evd" "$PST" eval --model "$TMP/g2p/model.safetensors" \
  --data "$TMP/own-test.tsv"
check "eval --data covers the whole file ($ns words)" contains "$TMP/evd" " all: loss .*($ns words)"
check "eval --data names the unseen letters" contains "$TMP/evd" "letters are not among the model's (.*'é'"
check "eval --data names the unseen phones" contains "$TMP/evd" "phones are not among the model's"

# A corrupt model file is a clear error.
head -c 100 "$TMP/g2p/model.safetensors" >"$TMP/broken.safetensors"
check "corrupt model" run 2 "$TMP/pc" "$PST" predict --model "$TMP/broken.safetensors" word
check "corrupt model message" contains "$TMP/pc" "broken.safetensors"

# Language model: train briefly, generate bytes.
check "train lm" run 0 "$TMP/tl" "$PST" train --config "$ROOT/configs/lm-fortunes.toml" \
  --set model.d_model=32 --set model.ffn_dim=64 --set model.decoder_layers=1 --set model.max_len=64 \
  --set data.seq_len=64 --set data.batch_size=4 --set data.eval_max_examples=8 \
  --set train.steps=10 --set train.eval_every=0 --set train.output="$TMP/lm"
check "lm reports bits per byte" grep -q '"kind":"test".*"bits_per_byte"' "$TMP/lm/metrics.jsonl"
# A corpus too small to fill the valid and test splits: training goes on and
# says that they will not be evaluated.
mkdir -p "$TMP/small-text"
head -c 6000 /usr/share/games/fortunes/fortunes >"$TMP/small-text/a"
check "train lm on 6 KB" run 0 "$TMP/tls" "$PST" train --config "$ROOT/configs/lm-fortunes.toml" \
  --set model.d_model=32 --set model.ffn_dim=64 --set model.decoder_layers=1 --set model.max_len=64 \
  --set data.seq_len=64 --set data.batch_size=4 --set data.path="$TMP/small-text" \
  --set train.steps=2 --set train.eval_every=0 --set train.output="$TMP/lm-small"
check "an empty split is named" contains "$TMP/tls" "the valid split is empty, so it will not be evaluated: it has 0 bytes, fewer than data.seq_len + 1 = 65"
check "generate" run 0 "$TMP/gen" "$PST" predict --model "$TMP/lm/model.safetensors" --bytes 20 "The "
check "generate prints prompt and continuation" test "$(head -c 24 "$TMP/gen" | wc -c)" -eq 24
# 100 bytes: past the model's 64 positions, where generation slides its window.
check "generate 100 bytes with and without the cache" run 0 "$TMP/gen100" bash -c "
  '$PST' predict --model '$TMP/lm/model.safetensors' --bytes 100 'The ' >'$TMP/g100.txt' &&
  '$PST' predict --model '$TMP/lm/model.safetensors' --bytes 100 --no-cache 'The ' >'$TMP/g100nc.txt'"
check "generation with the cache is that without" cmp -s "$TMP/g100.txt" "$TMP/g100nc.txt"
# Sampling: a seed gives one text, another seed another; top-k 1 is greedy;
# filters without a temperature, and sampling a G2P model, are refused.
check "sample with seeds" run 0 "$TMP/samp" bash -c "
  for run in 3a 3b 4; do '$PST' predict --model '$TMP/lm/model.safetensors' --bytes 40 --temperature 1 --top-p 0.95 \
    --seed \${run:0:1} 'The ' >'$TMP/sample-'\$run.txt || exit 1; done
  '$PST' predict --model '$TMP/lm/model.safetensors' --bytes 40 --temperature 0.7 --top-k 1 'The ' >'$TMP/k1.txt' &&
  '$PST' predict --model '$TMP/lm/model.safetensors' --bytes 40 'The ' >'$TMP/g40.txt'"
check "one seed, one text" cmp -s "$TMP/sample-3a.txt" "$TMP/sample-3b.txt"
check "another seed, another text" bash -c "! cmp -s $TMP/sample-3a.txt $TMP/sample-4.txt"
check "top-k 1 is greedy" cmp -s "$TMP/k1.txt" "$TMP/g40.txt"
check "top-k without a temperature" run 2 "$TMP/sk" "$PST" predict --model "$TMP/lm/model.safetensors" --top-k 5 "The "
check "says to give one" contains "$TMP/sk" "give --temperature too"
check "sampling a G2P model" run 2 "$TMP/sg" "$PST" predict --model "$TMP/g2p/model.safetensors" --temperature 1 word
check "eval lm" run 0 "$TMP/evl" "$PST" eval --model "$TMP/lm/model.safetensors" --split test
want=$(grep '"kind":"test"' "$TMP/lm/metrics.jsonl" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("bits/byte %.4f" % r["bits_per_byte"])')
check "eval lm prints train's test bits per byte ($want)" contains "$TMP/evl" "$want"
check "lm predictions refused" run 2 "$TMP/evl2" "$PST" eval --model "$TMP/lm/model.safetensors" --predictions "$TMP/x"

# A SentencePiece tokenizer: learnt from the training split, used by a job,
# and carried by the model file (eval and predict need no .model file).
check "tokenizer train" run 0 "$TMP/tok" "$PST" tokenizer train --data /usr/share/games/fortunes --vocab 500 \
  --out "$TMP/sp.model"
check "tokenizer vocab too small" run 2 "$TMP/tok2" "$PST" tokenizer train --data /usr/share/games/fortunes \
  --vocab 10 --out "$TMP/x.model"
check "tokenizer --vocab message" contains "$TMP/tok2" "--vocab 10: must be in"
check "sentencepiece needs its model" run 2 "$TMP/tsp0" "$PST" train --config "$ROOT/configs/lm-fortunes.toml" \
  --set data.tokenizer=sentencepiece --set train.output="$TMP/lm-sp0"
check "sentencepiece needs its model: message" contains "$TMP/tsp0" "needs data.tokenizer_model"
check "train lm with sentencepiece" run 0 "$TMP/tsp" "$PST" train --config "$ROOT/configs/lm-fortunes.toml" \
  --set model.d_model=32 --set model.ffn_dim=64 --set model.decoder_layers=1 --set model.max_len=64 \
  --set data.seq_len=32 --set data.batch_size=4 --set data.eval_max_examples=8 --set data.test_max_examples=8 \
  --set data.tokenizer=sentencepiece --set data.tokenizer_model="$TMP/sp.model" \
  --set train.steps=10 --set train.eval_every=0 --set train.output="$TMP/lm-sp"
check "bits per byte divide by the bytes the pieces cover" python3 -c "
import json, math
r = [json.loads(l) for l in open('$TMP/lm-sp/metrics.jsonl') if json.loads(l)['kind'] == 'test'][0]
assert r['bytes'] > r['tokens'] > 0, r  # pieces of more than a byte on average
assert abs(r['bits_per_byte'] - r['loss'] * r['tokens'] / r['bytes'] / math.log(2)) < 1e-4, r
c = json.load(open('$TMP/lm-sp/config.json'))
assert c['tokenizer']['kind'] == 'sentencepiece' and c['tgt_vocab_size'] == 500, c
"
check "the job keeps the tokenizer it trained with" cmp -s "$TMP/sp.model" "$TMP/lm-sp/tokenizer.model"
mv "$TMP/sp.model" "$TMP/sp.model.away"
check "eval a sentencepiece lm, no .model file" run 0 "$TMP/evsp" "$PST" eval --model "$TMP/lm-sp/model.safetensors" \
  --split test --max-examples 8
want=$(grep '"kind":"test"' "$TMP/lm-sp/metrics.jsonl" | python3 -c 'import json,sys; r=json.load(sys.stdin); print("bits/byte %.4f" % r["bits_per_byte"])')
check "it prints train's test bits per byte ($want)" contains "$TMP/evsp" "$want"
check "generate with sentencepiece" run 0 "$TMP/gsp" "$PST" predict --model "$TMP/lm-sp/model.safetensors" \
  --bytes 30 "The "
check "30 bytes or more after the prompt" python3 -c "
t = open('$TMP/gsp', 'rb').read()
assert t.startswith(b'The ') and len(t) >= 4 + 30, t"
mv "$TMP/sp.model.away" "$TMP/sp.model"

# bf16 products on the CPU (train.matmul = "bf16"). oneDNN told to use AVX2
# at most stands for a CPU without bf16 instructions: device cpu refuses
# them, naming what the CPU has; device auto trains in fp32 with a warning.
check "bf16 on a CPU without it" run 2 "$TMP/bf1" env DNNL_MAX_CPU_ISA=AVX2 "$PST" train \
  --config "$ROOT/configs/g2p-tiny.toml" --set train.device=cpu --set train.matmul=bf16 --set train.output="$TMP/bf1-out"
check "bf16 on a CPU without it: message" contains "$TMP/bf1" \
  'train.matmul = "bf16" on the CPU: oneDNN [0-9.]* finds no bf16 instructions on this CPU (it finds AVX2;'
check "no job was started" test ! -e "$TMP/bf1-out/model.safetensors"
check "bf16 with device auto, on a CPU without it" run 0 "$TMP/bf2" env DNNL_MAX_CPU_ISA=AVX2 "$PST" train \
  --config "$ROOT/configs/g2p-tiny.toml" --set train.device=auto --set train.matmul=bf16 --set train.steps=3 \
  --set train.eval_every=0 --set train.test_at_end=false --set train.output="$TMP/bf2-out"
check "it warns that the products are fp32" contains "$TMP/bf2" "the CPU's products are fp32"
if grep -qw -e avx512_bf16 -e amx_bf16 /proc/cpuinfo; then
  # With the instructions: the same job in bf16 and in fp32 learn alike but
  # not to the same bits.
  for m in fp32 bf16; do
    check "train in $m" run 0 "$TMP/bf-$m" "$PST" train --config "$ROOT/configs/g2p-tiny.toml" --set train.device=cpu \
      --set train.matmul=$m --set train.steps=30 --set train.eval_every=0 --set train.test_at_end=false \
      --set train.log_every=30 --set train.output="$TMP/bf-$m-out"
  done
  check "bf16 and fp32 losses agree within 2% after 30 steps, and differ" python3 -c "
import json
last = lambda m: [json.loads(l) for l in open('$TMP/bf-' + m + '-out/metrics.jsonl') if json.loads(l)['kind'] == 'train'][-1]
a, b = last('fp32'), last('bf16')
assert a['step'] == b['step'] == 30, (a, b)
assert a['loss'] != b['loss'] and abs(a['loss'] - b['loss']) < 0.02 * a['loss'], (a, b)"
else
  echo "skip: this CPU has no bf16 instructions (avx512_bf16, amx_bf16), so no bf16 training run"
fi

# debug grads writes what check_against_torch.py reads.
check "debug grads" run 0 "$TMP/dg.log" "$PST" debug grads --config "$ROOT/tests/reference/configs/lm_pre.toml" --out "$TMP/dg"
for f in config.toml weights.safetensors batch.safetensors pst.safetensors; do
  check "debug grads wrote $f" test -s "$TMP/dg/$f"
done

echo "$passes passed, $failures failed"
[[ $failures -eq 0 ]]
