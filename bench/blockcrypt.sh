#!/usr/bin/env bash
# blockcrypt serve side by side with qemu-nbd serving the raw image, qemu-nbd serving the same
# LUKS image through qemu's own LUKS driver, and nbdkit's file plugin (raw), in one run over a
# Unix socket on the same 1 GiB of random data: nbdcopy sequential read and (flushed) write, and
# fio --ioengine=nbd 4k random read/write at QD32. Prints each result and the ratios
# blockcrypt/qemu-nbd-LUKS and blockcrypt/qemu-nbd-raw. REPEAT=n interleaves n rounds and reports
# medians (every server restarted per round). Backing files sit in the page cache: this measures
# the protocol and crypto path, not the disk. Needs root (drop_caches).
# blockcrypt/nbdkit-raw (the unencrypted floor) is printed too.
#   bench/blockcrypt.sh    REPEAT=3 bench/blockcrypt.sh    QUICK=1 bench/blockcrypt.sh
#   SERVERS="nbdkit-raw blockcrypt" bench/blockcrypt.sh       only some servers
#   BLOCKCRYPT_B=/path/to/other/blockcrypt bench/blockcrypt.sh adds that build as blockcrypt-b
#                                                              (an interleaved A/B of two builds)
#   XTS=0 bench/blockcrypt.sh   skips the closing table of the sector cipher alone on one core
#                               against OpenSSL's XTS mode (kms-xts; alone: cargo run --release
#                               -p kms-bench --bin kms-xts [SECONDS])
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/timing.sh
for tool in qemu-nbd nbdkit nbdcopy fio; do
  command -v $tool >/dev/null || { echo "bench/blockcrypt.sh needs $tool (apt-get install qemu-utils nbdkit libnbd-bin fio)"; exit 1; }
done
fio --enghelp 2>/dev/null | grep -qw nbd || { echo "this fio has no nbd engine"; exit 1; }
cargo build --release -q -p blockcrypt --bin blockcrypt
[ "${XTS:-1}" = 0 ] || cargo build --release -q -p kms-bench --bin kms-xts
BC=$PWD/target/release/blockcrypt
SIZE_MB=1024; FIO_TIME=10; REPEAT=${REPEAT:-1}
if [ "${QUICK:-}" = 1 ]; then SIZE_MB=256; FIO_TIME=3; fi

W=$(mktemp -d "${BENCH_DIR:-$PWD/target}/blockcrypt-bench.XXXX")
PID=
stop() { [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null; PID=; rm -f "$W/sock"; }
trap 'stop; rm -rf "$W"' EXIT
KMS=(--embedded "$W/kms")

head -c $((SIZE_MB << 20)) /dev/urandom > "$W/src.img"
cp "$W/src.img" "$W/raw.img"
"$BC" "${KMS[@]}" --log-level warn import "$W/src.img" "$W/disk.img" >/dev/null
"$BC" "${KMS[@]}" --log-level warn passphrase "$W/disk.img" --qemu-secret "$W/pass.txt"
echo "== blockcrypt benchmark: ${SIZE_MB} MiB of random data; fio ${FIO_TIME}s per test at QD32; $(nproc) cores; median of $REPEAT run(s)"
echo "   (qemu-nbd-luks serves the very image blockcrypt made, through qemu's LUKS driver)"

start() { # server name -> starts it on $W/sock, sets PID
  local s="$W/sock"
  case $1 in
    qemu-raw) qemu-nbd -t -e 8 -f raw --cache=writeback --aio=threads -k "$s" "$W/raw.img" & ;;
    qemu-luks) qemu-nbd -t -e 8 --cache=writeback --aio=threads --object "secret,id=s0,file=$W/pass.txt" \
                 --image-opts "driver=luks,key-secret=s0,file.filename=$W/disk.img" -k "$s" & ;;
    nbdkit-raw) nbdkit -f -U "$s" file "$W/raw.img" & ;;
    blockcrypt) "$BC" "${KMS[@]}" --log-level warn serve --socket "$s" "$W/disk.img" & ;;
    blockcrypt-b) "$BLOCKCRYPT_B" "${KMS[@]}" --log-level warn serve --socket "$s" "$W/disk.img" & ;;
  esac
  PID=$!
  for _ in $(seq 200); do nbdinfo --size "nbd+unix:///?socket=$s" >/dev/null 2>&1 && return; sleep 0.05; done
  echo "bench/blockcrypt.sh: $1 did not start" >&2; exit 1
}
fio_iops() { # rw (the nbd engine prints a line before the JSON)
  fio --name=r --ioengine=nbd --uri="nbd+unix:///?socket=$W/sock" --rw="$1" --bs=4k --iodepth=32 \
      --runtime="$FIO_TIME" --time_based --output-format=json 2>/dev/null | sed -n '/^{/,$p' |
    python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(round(j["read"]["iops"]+j["write"]["iops"]))'
}
cpu() { awk '{print ($14 + $15) / 100}' "/proc/$PID/stat"; } # server CPU seconds so far

SERVERS=${SERVERS:-qemu-raw qemu-luks nbdkit-raw blockcrypt}
[ -n "${BLOCKCRYPT_B:-}" ] && SERVERS="$SERVERS blockcrypt-b"
declare -A R
for run in $(seq 1 "$REPEAT"); do
for s in $SERVERS; do
  # Every server starts from the same page-cache state: this kernel caches a file written in
  # large pieces in large folios, which make later 4k overwrites several times slower, so
  # without this the raw files (made by cp) and the LUKS image (written in 4 MiB pieces) differ.
  case $s in qemu-luks | blockcrypt*) img=disk.img ;; *) img=raw.img ;; esac
  drop; cat "$W/$img" "$W/src.img" > /dev/null
  start $s
  uri="nbd+unix:///?socket=$W/sock"
  sync
  c0=$(cpu); t=$(secs nbdcopy --no-extents "$uri" null:)
  R[$s,read]+=" $(echo "$SIZE_MB / $t" | bc -l)"; R[$s,readcpu]+=" $(echo "($(cpu) - $c0) * 1024 / $SIZE_MB" | bc -l)"
  c0=$(cpu); t=$(secs nbdcopy --flush "$W/src.img" "$uri")
  R[$s,write]+=" $(echo "$SIZE_MB / $t" | bc -l)"; R[$s,writecpu]+=" $(echo "($(cpu) - $c0) * 1024 / $SIZE_MB" | bc -l)"
  R[$s,randread]+=" $(fio_iops randread)"
  R[$s,randwrite]+=" $(fio_iops randwrite)"
  stop
done
done

python3 - <<PY
import statistics
r = {}
$(medians R)
ss = "$SERVERS".split()
peers = [p for p in ("qemu-luks", "qemu-raw", "nbdkit-raw") if p in ss]
rows = [("nbdcopy read MiB/s", "read"), ("nbdcopy write+flush MiB/s", "write"),
        ("fio 4k randread IOPS", "randread"), ("fio 4k randwrite IOPS", "randwrite"),
        ("server CPU-s/GiB read", "readcpu"), ("server CPU-s/GiB write", "writecpu")]
print(f"{'metric':<27}" + "".join(f"{s:>13}" for s in ss) + "".join(f"{'bc/' + p:>14}" for p in peers))
for label, k in rows:
    v = {s: r[f"{s},{k}"] for s in ss}
    lower = "cpu" in k
    ratio = lambda o: ((v[o] / v["blockcrypt"]) if lower else (v["blockcrypt"] / v[o])) if v[o] and v["blockcrypt"] else float("nan")
    print(f"{label:<27}" + "".join(f"{v[s]:>13.1f}" if v[s] < 1000 else f"{v[s]:>13,.0f}" for s in ss)
          + "".join(f"{ratio(p):>13.2f}x" for p in peers))
print("(ratios: higher is better for blockcrypt; CPU rows compare CPU spent, so >1 means blockcrypt spends less)")
PY

if [ "${XTS:-1}" != 0 ]; then
  echo "== the sector cipher alone, one core (kms-xts)"
  target/release/kms-xts 1
fi
