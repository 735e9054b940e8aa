#!/usr/bin/env bash
# One device call: install the carried wheels, restore the Triton cache, run the given steps, save the cache.
# usage (on the device machine): bash bench/gpu_run.sh STEP...   with STEP one of: check, features, bench-ours, bench-full,
# bench-final, bench-baselines, bench-gla, bench-shapes, bench-all, sweep, sweep-gla, check-gla, long, model,
# mqar, split, verify-fixes, sweep-linear, variants, bench-gla-long, bench-host, carried, autotune, new-specs,
# check-chunk, based-tuned, bench-rwkv6, profile-variants, variants-changed, mqar-gla, gla2d-time, breakdown, new-specs-check,
# new-specs-time, fla-warmup-bg, wait-bg, tiny-lm, fwd-probe, fwd-kernels, fwd-chunk, fwd-span, fwd-bound, fwd-segments, bwd-probe, profile-split,
# profile-baselines, fwd-persistent, host-overhead, fwd-stride, register-caps, bench-scalar-gates, gluon-fwd, gluon-op,
# gluon-carried,
# or a python script.
# Everything the steps write under $OUT comes back bundled in $OUT/results.tgz (the device returns at most 8 files),
# next to the Triton cache in $OUT/triton.tgz or, when it is bigger than one returned file may be, triton.tgz.part-*.
set -uo pipefail
export PYTHONUNBUFFERED=1 TRITON_CACHE_AUTOTUNING=1 TRITON_CACHE_DIR=/tmp/triton-cache LINATTN_GEN_CACHE=/tmp/lg-cache
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=$PWD:/tmp/site
else
  export PYTHONPATH=$PWD
fi
mkdir -p /tmp/triton-cache
# fla's autotuning results from earlier sessions (committed: its first call otherwise times every config for ~4 min
# per op), then this session's own cache if one was carried
for cache in bench/cache/*.tgz .device_cache/triton.tgz; do [ -f "$cache" ] && tar -xzf "$cache" -C /tmp/triton-cache; done
if ls .device_cache/triton.tgz.part-* >/dev/null 2>&1; then cat .device_cache/triton.tgz.part-* | tar -xz -C /tmp/triton-cache; fi
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
lg() { python3 -m linattn_gen.cli "$@"; }
T_ALL="16384:1024,2048,4096,8192,16384,32768;H=16;K=128;V=128"  # every T of the performance issue
# steps that are other steps run in turn
steps=()
for step in "$@"; do
  case $step in
    bench-full) steps+=(bench-gla bench-baselines) ;;
    new-specs) steps+=(new-specs-check new-specs-time) ;;
    *) steps+=("$step") ;;
  esac
done
for step in "${steps[@]}"; do
  echo "=== $step $(date +%T)"
  case $step in
    check)
      lg check specs/gla.yaml specs/retnet.yaml specs/linear_attn.yaml --shape 4,4096,8,128,128 \
        --dtype bfloat16,float32 --device cuda 2>&1 | tee "$OUT/check.txt" ;;
    bench-ours)
      lg bench specs/gla.yaml specs/retnet.yaml specs/linear_attn.yaml --against "" \
        --shapes "16384:2048,8192;H=16;K=128;V=128" --out "$OUT" 2>&1 | tee "$OUT/bench-ours.txt" ;;
    bench-baselines)  # linear attention and RetNet against fla at every T of the performance issue
      timeout ${LINEAR_SECONDS:-130} python3 -m linattn_gen.cli bench specs/linear_attn.yaml --against fla --shapes "$T_ALL" --out "$OUT" 2>&1 | tee "$OUT/bench-linear.txt"
      timeout ${RETNET_SECONDS:-130} python3 -m linattn_gen.cli bench specs/retnet.yaml --against fla --shapes "$T_ALL" --out "$OUT" 2>&1 | tee "$OUT/bench-retnet.txt" ;;
    bench-gla)  # GLA against fla and SDPA at every T of the performance issue
      timeout ${GLA_SECONDS:-300} python3 -m linattn_gen.cli bench specs/gla.yaml --against fla,sdpa --out "$OUT" \
        --shapes "$T_ALL" 2>&1 | tee "$OUT/bench-gla.txt" ;;
    bench-ours-all)  # ours only (no baselines to compile and autotune), every T of the perf issue
      timeout 150 python3 -m linattn_gen.cli bench specs/gla.yaml --against "" --shapes "$T_ALL" --out "$OUT" 2>&1 | tee "$OUT/bench-gla.txt"
      timeout 80 python3 -m linattn_gen.cli bench specs/linear_attn.yaml specs/retnet.yaml --against "" \
        --shapes "16384:2048,8192,32768;H=16;K=128;V=128" --out "$OUT" 2>&1 | tee "$OUT/bench-others.txt" ;;
    bench-scalar-gates)  # Mamba-2 (a gate per step and head) and Lightning (a decay per head) against fla
      timeout ${SCALAR_SECONDS:-150} python3 -m linattn_gen.cli bench specs/mamba2.yaml specs/lightning.yaml --against fla \
        --shapes "16384:2048,8192;H=16;K=128;V=128" --out "$OUT" 2>&1 | tee "$OUT/bench-scalar-gates.txt" ;;
    bench-shapes)
      lg bench specs/gla.yaml specs/retnet.yaml specs/linear_attn.yaml --against "" \
        --shapes "4,4096,16,64,64/4,4096,16,128,256" --out "$OUT" 2>&1 | tee "$OUT/bench-shapes.txt" ;;
    bench-final)
      timeout 290 python3 -m linattn_gen.cli bench specs/gla.yaml --against fla,sdpa --out "$OUT" \
        --shapes "16384:16384,32768;H=16;K=128;V=128" 2>&1 | tee "$OUT/bench-gla-long.txt"
      timeout 110 python3 -m linattn_gen.cli bench specs/linear_attn.yaml --against fla --out "$OUT" \
        --shapes "16384:4096,8192,16384,32768;H=16;K=128;V=128" 2>&1 | tee "$OUT/bench-linear.txt"
      timeout 80 python3 -m linattn_gen.cli bench specs/retnet.yaml --against fla --out "$OUT" 2>&1 \
        | tee "$OUT/bench-retnet.txt"
      timeout 40 python3 -m linattn_gen.cli bench specs/gla.yaml specs/retnet.yaml specs/linear_attn.yaml \
        --against "" --shapes "4,4096,16,64,64/4,4096,16,128,256" --out "$OUT" 2>&1 | tee "$OUT/bench-shapes.txt"
      SKIP_CACHE_TAR=1 ;;
    bench-gla-long)  # GLA at the T where the split state pass applies, against fla and SDPA
      timeout ${GLA_LONG_SECONDS:-250} python3 -m linattn_gen.cli bench specs/gla.yaml --against fla,sdpa --out "$OUT" \
        --shapes "16384:8192,16384,32768;H=16;K=128;V=128" 2>&1 | tee "$OUT/bench-gla-long.txt" ;;
    bench-host)  # small calls, where host time per call shows: ours only
      timeout 90 python3 -m linattn_gen.cli bench specs/linear_attn.yaml specs/retnet.yaml specs/gla.yaml --against "" \
        --shapes "16384:1024,2048;H=16;K=128;V=128" --out "$OUT" 2>&1 | tee "$OUT/bench-host.txt" ;;
    tiny-lm)
      timeout 200 python3 examples/tiny_lm.py specs/gla.yaml --steps ${TINY_LM_STEPS:-300} --device cuda 2>&1 | tee "$OUT/tiny-lm.txt" ;;
    bench-all)
      lg bench specs/gla.yaml specs/retnet.yaml specs/linear_attn.yaml --against fla,sdpa --out "$OUT" 2>&1 \
        | tee "$OUT/bench-all.txt" ;;
    sweep)
      SWEEP_SECONDS=${SWEEP_SECONDS:-400} python3 bench/sweep.py specs/gla.yaml specs/linear_attn.yaml specs/retnet.yaml \
        2>&1 | tee "$OUT/sweep.txt" ;;
    sweep-gla)
      SWEEP_SECONDS=${SWEEP_SECONDS:-200} python3 bench/sweep.py specs/gla.yaml 2>&1 | tee "$OUT/sweep-gla.txt" ;;
    features)  # FEATURES_ARGS: extra arguments (--specs, --quick, --skip); FEATURES_OUT: where its JSON goes
      timeout ${FEATURES_SECONDS:-400} python3 bench/gpu_features.py --out "${FEATURES_OUT:-$OUT}" ${FEATURES_ARGS:-} 2>&1 \
        | tee -a "$OUT/features.txt" ;;
    verify-fixes)  # what the third session of 2026-11-23 changed without a GPU, first thing in the next one
      python3 bench/gpu_features.py --specs katharopoulos,rwkv6 --quick --skip decode --out "$OUT/variants" 2>&1 | tee -a "$OUT/features.txt"
      python3 bench/gpu_features.py --skip correctness --out "$OUT/decode" 2>&1 | tee -a "$OUT/features.txt"
      timeout 200 python3 bench/gpu_split.py --out "$OUT" 2>&1 | tee "$OUT/split.txt" ;;
    sweep-linear)  # where linear attention's backward time goes, kernel by kernel
      SWEEP_SECONDS=120 timeout 150 python3 bench/sweep.py specs/linear_attn.yaml 2>&1 | tee "$OUT/sweep-linear.txt" ;;
    variants)  # issue 6: every variant at B=4, T=4096, H=16, K=V=128 against fla's equivalent, each with its check
      timeout ${VARIANTS_SECONDS:-400} python3 -m linattn_gen.cli bench specs/mamba2.yaml specs/hgrn2.yaml specs/rwkv6.yaml specs/lightning.yaml \
        specs/katharopoulos.yaml ${VARIANT_SPECS:-} --against "${VARIANTS_AGAINST-fla}" --shapes "4,4096,16,128,128" --out "$OUT/variants" 2>&1 \
        | tee "$OUT/bench-variants.txt" ;;
    fla-warmup-bg)  # fla's first-call autotuning, one process per op in the background (see bench/fla_warmup.py)
      for op in ${FLA_WARMUP_OPS:-simple_gla_gamma linear simple_gla_g rwkv6}; do
        timeout ${FLA_WARMUP_SECONDS:-420} python3 bench/fla_warmup.py --ops $op > "$OUT/fla-warmup-$op.txt" 2>&1 &
      done ;;
    wait-bg)
      wait; cat "$OUT"/fla-warmup-*.txt 2>/dev/null ;;
    variants-changed)  # the variants whose kernels or baselines changed in run 9, against fla's equivalents
      timeout ${VARIANTS_SECONDS:-240} python3 -m linattn_gen.cli bench specs/hgrn2.yaml specs/rwkv6.yaml specs/katharopoulos.yaml \
        --against fla --shapes "4,4096,16,128,128" --out "$OUT/variants" 2>&1 | tee "$OUT/bench-variants.txt"
      timeout ${BASED_SECONDS:-100} python3 -m linattn_gen.cli bench specs/based.yaml --against fla \
        --shapes "4,4096,16,16,128/4,4096,16,16,64" --out "$OUT/variants" 2>&1 | tee -a "$OUT/bench-variants.txt" ;;
    mqar-gla)  # GLA alone on MQAR with the shipped layer defaults (gate_bias 4 since run 9)
      timeout ${MQAR_SECONDS:-150} python3 -m linattn_gen.cli mqar specs/gla.yaml --out "$OUT" ${MQAR_ARGS:-} 2>&1 \
        | tee "$OUT/mqar-gla.txt" ;;
    profile-variants)  # where the variants slower than fla spend their time, kernel by kernel (bench/gpu_profile.py)
      timeout ${PROFILE_SECONDS:-200} python3 bench/gpu_profile.py specs/rwkv6.yaml specs/katharopoulos.yaml specs/based.yaml \
        specs/hgrn2.yaml --bonus 2>&1 | tee "$OUT/profile.txt" ;;
    based-tuned)  # Based with the expanded-feature kernels' opt-in tuning (wider value blocks), against fla
      LINATTN_GEN_AUTOTUNE=1 timeout ${BASED_SECONDS:-150} python3 -m linattn_gen.cli bench specs/based.yaml --against fla \
        --shapes "4,4096,16,16,128/4,4096,16,16,64" --out "$OUT/based-tuned" 2>&1 | tee "$OUT/bench-based-tuned.txt" ;;
    bench-rwkv6)  # RWKV-6 alone against fla's chunk_rwkv6, at the variants' shape
      timeout ${RWKV6_SECONDS:-120} python3 -m linattn_gen.cli bench specs/rwkv6.yaml --against fla --shapes "4,4096,16,128,128" \
        --out "$OUT/variants" 2>&1 | tee "$OUT/bench-rwkv6.txt" ;;
    gla2d-time)  # the 2-D gate at the variants' shape, ours only (fla has no such kernel)
      timeout ${GLA2D_SECONDS:-100} python3 -m linattn_gen.cli bench specs/gla2d.yaml --against "" --shapes "4,4096,16,128,128" \
        --out "$OUT/gla2d" 2>&1 | tee "$OUT/bench-gla2d.txt" ;;
    fwd-segments)  # a segment-carried forward (fwd_h storing every S-th state, outputs carrying it S chunks) against ours
      timeout ${PROBE_SECONDS:-200} python3 bench/gpu_fwd_probe.py --generated-only --segments 2>&1 | tee "$OUT/fwd-segments.txt" ;;
    gluon-fwd)  # GLA's output pass written in Gluon (TMA ring, wgmma), against the generated kernel (bench/gpu_gluon_fwd.py)
      for t in ${GLUON_T:-2048 8192}; do
        timeout ${PROBE_SECONDS:-200} python3 bench/gpu_gluon_fwd.py --T $t 2>&1 | tee -a "$OUT/gluon-fwd.txt"
      done ;;
    gluon-op)  # the generated ops' Gluon output pass against their Triton one, and GLA's forward timed both ways
      timeout ${PROBE_SECONDS:-300} python3 bench/gpu_gluon_fwd.py --op ${GLUON_OP_SPECS:-gla,rwkv6,hgrn2} 2>&1 \
        | tee "$OUT/gluon-op.txt" ;;
    gluon-carried)  # the Gluon carried forward: checks against the reference and the two passes, then timing
      timeout ${PROBE_SECONDS:-400} python3 bench/gpu_gluon_carried.py ${CARRIED_ARGS:-} 2>&1 | tee "$OUT/gluon-carried.txt" ;;
    bwd-probe)  # GLA's bwd_dqkg under several launch configs, and probe copies pricing its gate arithmetic
      timeout ${PROBE_SECONDS:-200} python3 bench/gpu_bwd_probe.py 2>&1 | tee "$OUT/bwd-probe.txt" ;;
    profile-split)  # GLA kernel by kernel where the state passes split (T = 16K) and where they no longer do (8K)
      for shape in 2,8192,16,128,128 1,16384,16,128,128; do
        timeout ${PROFILE_SECONDS:-90} python3 -m linattn_gen.cli profile specs/gla.yaml --shape $shape --top 16 \
          --out "$OUT/profile-$shape" 2>&1 | tee -a "$OUT/profile-split.txt"
      done ;;
    profile-baselines)  # linear attention and RetNet kernel by kernel where run 11 found them slower than in run 9
      for spec_shape in linear_attn:8,2048,16,128,128 linear_attn:2,8192,16,128,128 retnet:2,8192,16,128,128; do
        timeout ${PROFILE_SECONDS:-90} python3 -m linattn_gen.cli profile specs/${spec_shape%%:*}.yaml --shape ${spec_shape#*:} \
          --top 12 --out "$OUT/profile-$spec_shape" 2>&1 | tee -a "$OUT/profile-baselines.txt"
      done ;;
    fwd-probe)  # GLA's two forward kernels under several launch configs, and probe copies pricing their parts
      timeout ${PROBE_SECONDS:-200} python3 bench/gpu_fwd_probe.py 2>&1 | tee "$OUT/fwd-probe.txt" ;;
    fwd-chunk)  # the output pass flagging (not branching on) chunks past the span limit, and both passes on 128-row chunks
      timeout ${PROBE_SECONDS:-240} python3 bench/gpu_fwd_probe.py --generated-only --flagged --chunk128 2>&1 | tee "$OUT/fwd-chunk.txt" ;;
    fwd-span)  # the generated forward kernels with the span stored by the state pass, and span-free probes of fwd_o
      timeout ${PROBE_SECONDS:-200} python3 bench/gpu_fwd_probe.py --generated-only --span-free 2>&1 | tee "$OUT/fwd-span.txt" ;;
    fwd-bound)  # the state pass storing each chunk's column sums of |a|, the output pass testing them (run 11's next step)
      timeout ${PROBE_SECONDS:-200} python3 bench/gpu_fwd_probe.py --generated-only --bound 2>&1 | tee "$OUT/fwd-bound.txt" ;;
    fwd-stride)  # GLA's inference forward with the chunk states stored every 1, 2, 4 chunks (bench/gpu_fwd_stride.py)
      for T in ${STRIDE_TS:-2048 8192}; do
        timeout ${PROBE_SECONDS:-150} python3 bench/gpu_fwd_stride.py --T $T 2>&1 | tee -a "$OUT/fwd-stride.txt"
      done ;;
    fwd-persistent)  # GLA's output pass as a persistent kernel that pipelines its chunks, block pointers or TMA
      timeout ${PROBE_SECONDS:-240} python3 bench/gpu_fwd_persistent.py ${PERSISTENT_ARGS:-} 2>&1 | tee "$OUT/fwd-persistent.txt" ;;
    register-caps)  # chunk kernels timed alone under register caps (maxnreg) and the other warp count (CAPS_SPECS)
      for spec in ${CAPS_SPECS:-gla}; do
        for T in ${CAPS_TS:-2048}; do
          timeout ${PROBE_SECONDS:-300} python3 bench/gpu_register_caps.py --spec specs/$spec.yaml --T $T 2>&1 \
            | tee -a "$OUT/register-caps.txt"
        done
      done ;;
    host-overhead)  # host time against kernel time per call, ours and fla's (bench/gpu_host_overhead.py)
      timeout ${HOST_SECONDS:-200} python3 bench/gpu_host_overhead.py ${HOST_ARGS:-} 2>&1 | tee "$OUT/host-overhead.txt" ;;
    fwd-kernels)  # GLA's two forward kernels under several launch configs only
      timeout ${PROBE_SECONDS:-200} python3 bench/gpu_fwd_probe.py --generated-only 2>&1 | tee "$OUT/fwd-kernels.txt" ;;
    breakdown)  # GLA's forward+backward kernel by kernel (the profiler part of bench/sweep.py, no config sweep)
      SWEEP_KERNELS=none SWEEP_SECONDS=60 timeout ${BREAKDOWN_SECONDS:-60} python3 bench/sweep.py specs/gla.yaml 2>&1 \
        | tee "$OUT/breakdown.txt" ;;
    check-chunk)  # chunk kernels of every spec but Based against the reference, fp32 and bf16, specs in parallel
      LINATTN_GEN_AUTOTUNE=0 timeout ${CHECK_SECONDS:-300} python3 bench/gpu_features.py --quick --jobs 8 \
        --skip packed,decode,recurrent --specs ${CHECK_SPECS:-gla,retnet,linear_attn,mamba2,lightning,hgrn2,katharopoulos,rwkv6,gla2d} \
        --out "$OUT" 2>&1 | tee "$OUT/check-chunk.txt" ;;
    new-specs-check)  # autotuning off: the default launch configs are checked here, the tuned ones by the bench
      LINATTN_GEN_AUTOTUNE=0 timeout ${NEW_SPECS_SECONDS:-300} python3 bench/gpu_features.py --specs gla2d,based --quick --skip packed,decode \
        --out "$OUT" 2>&1 | tee "$OUT/features.txt" ;;
    new-specs-time)
      timeout 120 python3 -m linattn_gen.cli bench specs/gla2d.yaml --against "" --shapes "4,4096,16,128,128" \
        --out "$OUT/new-specs" 2>&1 | tee "$OUT/bench-new-specs.txt"
      timeout 80 python3 -m linattn_gen.cli bench specs/based.yaml --against "" --shapes "4,4096,16,16,128/4,4096,16,16,64" \
        --out "$OUT/new-specs" 2>&1 | tee -a "$OUT/bench-new-specs.txt" ;;
    carried)  # inference forward: state carried in registers against materialized chunk states
      timeout ${CARRIED_SECONDS:-200} python3 bench/gpu_carried.py --out "$OUT" 2>&1 | tee "$OUT/carried.txt" ;;
    split)
      timeout ${SPLIT_SECONDS:-240} python3 bench/gpu_split.py --out "$OUT" ${SPLIT_ARGS:-} 2>&1 | tee "$OUT/split.txt" ;;
    long)
      python3 bench/gpu_long.py --out "$OUT" 2>&1 | tee "$OUT/long.txt" ;;
    model)
      python3 bench/gpu_model.py --out "$OUT" ${MODEL_ARGS:-} 2>&1 | tee "$OUT/model.txt" ;;
    mqar)
      timeout ${MQAR_SECONDS:-400} python3 -m linattn_gen.cli mqar specs/gla.yaml specs/linear_attn.yaml specs/retnet.yaml \
        --out "$OUT" ${MQAR_ARGS:-} 2>&1 | tee "$OUT/mqar.txt" ;;
    autotune)  # ours with launch-config autotuning on (first call tunes, timed in first_call_s), JSON in $OUT/autotune
      LINATTN_GEN_AUTOTUNE=1 timeout ${AUTOTUNE_SECONDS:-120} python3 -m linattn_gen.cli bench specs/gla.yaml --against "" \
        --shapes "${AUTOTUNE_SHAPES:-16384:1024,2048,4096,8192,16384,32768;H=16;K=128;V=128}" --out "$OUT/autotune" 2>&1 \
        | tee "$OUT/autotune.txt" ;;
    check-gla)
      lg check specs/gla.yaml --shape 4,4096,8,128,128 --dtype bfloat16 --device cuda 2>&1 | tee "$OUT/check-gla.txt" ;;
    *) python3 "$step" 2>&1 | tee -a "$OUT/extra.txt" ;;
  esac
done
wait  # background steps left running
(cd "$OUT" && find . -type f ! -name 'triton.tgz*' ! -name results.tgz | tar -czf results.tgz -T - && \
  find . -type f ! -name 'triton.tgz*' ! -name results.tgz -delete && find . -mindepth 1 -type d -empty -delete)
if [ -z "${SKIP_CACHE_TAR:-}" ]; then
  # a returned file must be under 16 MiB: the whole cache in up to four parts, or else the autotuning results alone
  # (a later call then compiles only the chosen configs instead of timing every candidate)
  tar -czf "$OUT/triton.tgz" -C /tmp/triton-cache . 2>/dev/null
  size=$(stat -c %s "$OUT/triton.tgz")
  if [ "$size" -gt 55000000 ]; then
    (cd /tmp/triton-cache && find . -name '*.autotune.json' | tar -czf "$OUT/triton.tgz" -T -)
  elif [ "$size" -gt 15000000 ]; then
    split -b 15000000 -d "$OUT/triton.tgz" "$OUT/triton.tgz.part-" && rm "$OUT/triton.tgz"
  fi
  ls -la "$OUT"
fi
echo "=== done $(date +%T)"
