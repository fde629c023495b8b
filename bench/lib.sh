# What the benchmark scripts share; each sources it:
#   source "$ROOT/bench/lib.sh"

# Reads numbers, one a line, and prints "median min max count" on one line:
# the median of an even count is the mean of its two middle values, as
# bench/median.h takes it. Prints nothing for no numbers.
median_min_max() {
  sort -g | awk '{v[NR] = $1}
    END {if (NR) printf "%.9g %.9g %.9g %d\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[1], v[NR], NR}'
}

# short_g2p_job STEPS: sets JOB to the arguments of a short g2p-small run for
# a throughput figure (no validation, no test, one log line at the end).
short_g2p_job() {
  JOB=(--config "$ROOT/configs/g2p-small.toml" --set train.steps="$1" --set train.eval_every=0
       --set train.test_at_end=false --set train.log_every="$1" --set data.eval_max_examples=50)
}

# rate LOG: the tokens/s a training log reports last.
rate() { grep -o '[0-9]* tokens/s$' "$1" | tail -1 | cut -d' ' -f1; }
