# What the benchmark scripts share; each sources it:
#   source "$ROOT/bench/lib.sh"

# Reads numbers, one a line, and prints "median min max count" on one line:
# the median of an even count is the mean of its two middle values, as
# bench/median.h takes it. Prints nothing for no numbers.
median_min_max() {
  sort -g | awk '{v[NR] = $1}
    END {if (NR) printf "%.9g %.9g %.9g %d\n", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2, v[1], v[NR], NR}'
}
