#!/usr/bin/env bash
# kmsfs side by side with the plain backing directory, a passthrough FUSE (bindfs) and gocryptfs,
# in one run on the same disk: 1 GiB sequential write (fsync'ed) and cold read, fio 4k random
# read/write (O_DIRECT where the filesystem takes it), untar of a tree of many small files,
# `ls -lR` (cold) and `rm -rf` of it. Prints each result and the ratios kmsfs/gocryptfs,
# kmsfs/bindfs and kmsfs/plain (how close kmsfs comes to the unencrypted directory: 0.33 is
# "within 3×"). REPEAT=n runs the whole set n times (filesystems interleaved) and reports
# medians – this machine's disk is shared and single runs move by ±20%.
# kmsfs serves requests over io_uring where the kernel offers it: the script turns the
# `fuse.enable_uring` module parameter on for the run (gocryptfs and bindfs cannot use it) and
# restores it after. FSS="gocryptfs kmsfs" picks filesystems; KMSFS_OPTS="-o no_io_uring" (or any
# mount option) is passed to kmsfs – for A/B runs; KMSFS_B=/path/to/other/kmsfs adds that build
# as kmsfs-b (an interleaved A/B of two builds).
# Needs root (FUSE mounts, drop_caches).   bench/kmsfs.sh    REPEAT=3 bench/kmsfs.sh    QUICK=1 bench/kmsfs.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/timing.sh
for tool in bindfs gocryptfs fio fusermount3; do
  command -v $tool >/dev/null || { echo "bench/kmsfs.sh needs $tool (apt-get install bindfs gocryptfs fio fuse3)"; exit 1; }
done
cargo build --release -q -p fusefs --bin kmsfs
KMSFS=$PWD/target/release/kmsfs
SIZE_MB=1024; FIO_TIME=10; FILES=20000; REPEAT=${REPEAT:-1}
if [ "${QUICK:-}" = 1 ]; then SIZE_MB=256; FIO_TIME=3; FILES=4000; fi

W=$(mktemp -d "${BENCH_DIR:-$PWD/target}/kmsfs-bench.XXXX")
URING=/sys/module/fuse/parameters/enable_uring
URING_WAS=$(cat "$URING" 2>/dev/null || echo absent)
[ -w "$URING" ] && echo Y > "$URING"
cleanup() {
  for m in "$W"/*/mnt; do mountpoint -q "$m" && fusermount3 -uz "$m"; done
  rm -rf "$W"
  [ "$URING_WAS" = absent ] || echo "$URING_WAS" > "$URING"
}
trap cleanup EXIT

# A deterministic source-like tree: FILES files in FILES/40 directories, sizes 200 B – 64 KiB
# (log-uniform), made once and packed.
python3 - "$W/tree" "$FILES" <<'PY'
import os, random, sys
root, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(8)
for i in range(n):
    d = os.path.join(root, f"d{i // 40 % 50}", f"s{i // 40}")
    os.makedirs(d, exist_ok=True)
    size = int(200 * (2 ** rnd.uniform(0, 8.35)))
    with open(os.path.join(d, f"file{i}.c"), "wb") as f:
        f.write(rnd.randbytes(size // 2) * 2)
PY
tar -C "$W" -cf "$W/tree.tar" tree
rm -rf "$W/tree"
echo "== kmsfs benchmark: $(du -sm "$W/tree.tar" | cut -f1) MiB tarball of $FILES files; ${SIZE_MB} MiB sequential; fio ${FIO_TIME}s per test; $(nproc) cores; median of $REPEAT run(s); fuse.enable_uring=$(cat "$URING" 2>/dev/null || echo absent)"

setup() { # name -> prints the directory to test in
  local d="$W/$1"; mkdir -p "$d/back" "$d/mnt"
  case $1 in
    plain) echo "$d/back"; return ;;
    bindfs) bindfs --no-allow-other "$d/back" "$d/mnt" >/dev/null 2>&1 ;;
    gocryptfs)
      gocryptfs -q -nosyslog -init -extpass "echo benchpass" -scryptn 10 "$d/back" >/dev/null
      # (its daemon keeps the stdout it is given: not the pipe of this command substitution)
      gocryptfs -q -nosyslog -extpass "echo benchpass" "$d/back" "$d/mnt" >/dev/null 2>&1 ;;
    kmsfs | kmsfs-b)
      local bin=$KMSFS; [ "$1" = kmsfs-b ] && bin=$KMSFS_B
      "$bin" --embedded "$d/kms" init "$d/back" >/dev/null
      "$bin" --embedded "$d/kms" mount "$d/back" "$d/mnt" ${KMSFS_OPTS:-} >/dev/null 2>&1 ;;
  esac
  echo "$d/mnt"
}
fio_iops() { # dir rw direct
  fio --name=r --directory="$1" --rw="$2" --bs=4k --size=256M --direct="$3" --ioengine=psync \
      --runtime="$FIO_TIME" --time_based --group_reporting --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(round(j["read"]["iops"]+j["write"]["iops"]))'
}

wait_for_empty() { while [ -n "$(ls -A "$1" 2>/dev/null)" ]; do sleep 0.02; done; }

FSS=${FSS:-plain bindfs gocryptfs kmsfs}
[ -n "${KMSFS_B:-}" ] && FSS="$FSS kmsfs-b"
declare -A R
for run in $(seq 1 "$REPEAT"); do
for fs in $FSS; do
  rm -rf "${W:?}/$fs"
  dir=$(setup $fs)
  drop
  t=$(secs dd if=/dev/zero of="$dir/seq" bs=1M count=$SIZE_MB conv=fsync)
  R[$fs,write]+=" $(echo "$SIZE_MB / $t" | bc -l)"
  drop
  t=$(secs dd if="$dir/seq" of=/dev/null bs=1M)
  R[$fs,read]+=" $(echo "$SIZE_MB / $t" | bc -l)"
  rm -f "$dir/seq"
  direct=1
  dd if=/dev/zero of="$dir/probe" bs=4k count=1 oflag=direct 2>/dev/null || direct=0
  rm -f "$dir/probe"
  R[$fs,randwrite]+=" $(fio_iops "$dir" randwrite $direct || echo 0)"
  drop
  R[$fs,randread]+=" $(fio_iops "$dir" randread $direct || echo 0)"
  R[$fs,direct]=$direct
  rm -f "$dir"/r.*
  drop
  R[$fs,untar]+=" $(secs tar -C "$dir" -xf "$W/tree.tar")"
  drop
  R[$fs,ls]+=" $(secs ls -lR "$dir/tree")"
  drop
  R[$fs,rm]+=" $(secs rm -rf "$dir/tree")"
  # kmsfs deletes removed files' backing files in the background once removals pause: also
  # time until that is done (the others are done when rm returns).
  t=0; case $fs in kmsfs*) t=$(secs wait_for_empty "$W/$fs/back/.kmsfs-trash") ;; esac
  R[$fs,rmdone]+=" $(echo "${R[$fs,rm]##* } + $t" | bc -l)"
  if [ $fs != plain ]; then
    # Wait for the daemon to exit, so that none of its work overlaps the next measurement.
    pids=$(pgrep -f -- "$W/$fs/mnt" || true)
    fusermount3 -u "$W/$fs/mnt"
    for p in $pids; do while kill -0 "$p" 2>/dev/null; do sleep 0.05; done; done
  fi
done
done

python3 - <<PY
r = {}
import statistics
$(medians R)
fss = "$FSS".split()
peers = [p for p in ("gocryptfs", "bindfs", "plain") if p in fss]
rows = [("seq write MiB/s", "write", True), ("seq read (cold) MiB/s", "read", True),
        ("4k randwrite IOPS", "randwrite", True), ("4k randread IOPS", "randread", True),
        ("untar s", "untar", False), ("ls -lR (cold) s", "ls", False), ("rm -rf s", "rm", False),
        ("rm -rf + deletion s", "rmdone", False)]
print(f"{'metric':<24}" + "".join(f"{f:>12}" for f in fss) + "".join(f"{'kmsfs/' + p:>17}" for p in peers))
for label, k, higher in rows:
    v = {f: r.get(f"{f},{k}", 0) for f in fss}
    ratio = lambda other: (v["kmsfs"] / v[other] if higher else v[other] / v["kmsfs"]) if v[other] and v["kmsfs"] else float("nan")
    print(f"{label:<24}" + "".join(f"{v[f]:>12.1f}" if v[f] < 1000 else f"{v[f]:>12,.0f}" for f in fss)
          + "".join(f"{ratio(p):>16.2f}x" for p in peers))
print("(ratios: higher is better for kmsfs; fio with O_DIRECT where "
      + ", ".join(f for f in fss if r.get(f"{f},direct") == 1) + ")")
PY
