# What the benchmark scripts share; each sources it:
#   source "$ROOT/bench/lib.sh"

# Reads numbers, one a line, and prints "median min max count" on one line:
# the median of an even count is the mean of its two middle values, as
# bench/median.h takes it. Prints nothing for no numbers.
median_min_max() {
  sort -g | awk '{v[NR] = $1}
    END {if (NR) printf "%.9g %.9g %.9g %d\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[1], v[NR], NR}'
}

# short_g2p_job STEPS [CONFIG]: sets JOB to the arguments of a short run of
# configs/CONFIG.toml (g2p-small by default) for a throughput figure (no
# validation, no test, one log line at the end).
short_g2p_job() {
  JOB=(--config "$ROOT/configs/${2:-g2p-small}.toml" --set train.steps="$1" --set train.eval_every=0
       --set train.test_at_end=false --set train.log_every="$1" --set data.eval_max_examples=50)
}

# rate LOG: the tokens/s a training log reports last.
rate() { grep -o '[0-9]* tokens/s$' "$1" | tail -1 | cut -d' ' -f1; }

# scraped_run LOG STEPS COMMAND...: runs a training job in the background
# (COMMAND must set metrics.linger_s, so that its /metrics stays up after the
# last step), waits for its last tokens/s line, reads worker 0's phases from
# its /metrics and ends the job. Sets SCRAPED to "TOKENS_PER_S STEP_MS
# FORWARD_MS BACKWARD_MS PUSH_MS PULL_MS WAIT_MS": the step is the training
# time over the steps (the log's "in Ns of training"), each phase its time per
# step (pull: asking for the weights; wait: waiting for those not yet there).
# SCRAPED_PID holds the job's PID while it runs, for the EXIT trap's
# end_scraped_run (call scraped_run in the script's shell, not in $(...)).
SCRAPED="" SCRAPED_PID=""
scraped_run() {
  local log=$1 steps=$2 url
  shift 2
  "$@" >"$log" 2>&1 &
  SCRAPED_PID=$!
  while kill -0 "$SCRAPED_PID" 2>/dev/null && ! grep -q 'tokens/s$' "$log"; do sleep 0.5; done
  # One process logs one metrics address; under mpirun worker 0's is named.
  url=$(grep '\[worker 0\].*metrics at http' "$log" | grep -o 'http://[^ ]*' | head -1 || true)
  [[ -n $url ]] || url=$(grep 'metrics at http' "$log" | grep -o 'http://[^ ]*' | head -1 || true)
  local training
  training=$(grep -o 'in [0-9.]*s of training' "$log" | tail -1 | grep -o '[0-9.]*')
  SCRAPED=$(curl -s --max-time 10 "$url" | awk -v steps="$steps" -v rate="$(rate "$log")" -v training="$training" '
    /^pst_phase_duration_seconds_sum/ { match($0, /phase="[a-z]*"/); v[substr($0, RSTART + 7, RLENGTH - 8)] = $NF }
    END { printf "%s %.1f %.1f %.1f %.1f %.1f %.1f\n", rate, 1e3 * training / steps, 1e3 * v["forward"] / steps,
          1e3 * v["backward"] / steps, 1e3 * v["push"] / steps, 1e3 * v["pull"] / steps, 1e3 * v["wait"] / steps }')
  kill "$SCRAPED_PID" 2>/dev/null || true
  wait "$SCRAPED_PID" 2>/dev/null || true
  SCRAPED_PID=""
}

# end_scraped_run: the EXIT trap's part for a job scraped_run left running.
end_scraped_run() {
  [[ -z $SCRAPED_PID ]] || kill "$SCRAPED_PID" 2>/dev/null || true
  [[ -z $SCRAPED_PID ]] || wait "$SCRAPED_PID" 2>/dev/null || true
}

# phases_text "TOKENS_PER_S STEP FORWARD BACKWARD PUSH PULL WAIT": the
# figures scraped_run sets, in words; "other" is the step's time outside
# those phases.
phases_text() {
  awk '{printf "%s tokens/s, step %.0f ms: forward %.0f backward %.0f push %.1f pull %.1f wait %.1f other %.1f ms/step",
        $1, $2, $3, $4, $5, $6, $7, $2 - $3 - $4 - $5 - $6 - $7}' <<<"$1"
}
