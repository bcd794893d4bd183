# Shared by the filesystem and disk benchmarks (sourced, not run).

# Empties the page cache (needs root): every server or filesystem starts a step alike.
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# Seconds a command takes; a failed step stops the benchmark rather than timing a partial job.
secs() {
  local s=$(date +%s.%N) out
  out=$("$@" 2>&1 >/dev/null) || { echo "$(basename "$0"): $* failed: ${out:0:500}" >&2; exit 1; }
  echo "$(date +%s.%N) - $s" | bc -l
}

# Prints python assignments r['key'] = median for each entry of the associative array named $1
# (values are space-separated samples), for the report scripts to paste in.
medians() {
  local -n samples=$1
  for k in "${!samples[@]}"; do echo "r['$k'] = statistics.median(float(x) for x in '${samples[$k]}'.split())"; done
}
