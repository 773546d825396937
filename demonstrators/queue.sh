#!/usr/bin/env bash
# Trains the navigation demonstrators at low priority in two lanes (one per core), each lane's
# jobs one after another, every job resumable: rerun this script and each job continues from its
# checkpoint; a job already trained and selected is skipped, and one that another copy of the
# script is training (a lock file per job) too. After a job the committed policy.pt
# is chosen (safe: the best snapshot with mean cost <= 20 on 20 episodes of its own; unsafe: the
# final policy), and once both kinds of a task exist, quality.json is measured.
# Jobs: TASK KIND[@VARIANT] STEPS [trainer options] [-- selection options]. A variant trains
# into demonstrators/TASK/KIND@VARIANT/ beside the committed KIND/ (a recipe being compared);
# it gets selected but not quality-measured: the better recipe is then copied into KIND/.
# Safe jobs: PointGoal1's (trained first) is PPO-Lagrangian from scratch with OmniSafe's Adam
# multiplier against a limit of 10, below the evaluation's 25 (the Lagrangian hovers around,
# and above, its target); its cost first stayed near 25 after ~2M steps. The later ones start
# from their task's unsafe policy (init_from) with a PID multiplier (CPPO-PID), which reacts
# to the cost within a few epochs where the Adam multiplier climbs ~0.03 per epoch.
# A safe job that warm-starts waits while the other lane trains its unsafe policy.
# PointButton1's warm-started PID job (5M steps) froze: by 4M lambda was ~140 and the policy
# stood still (return ~0, cost 15-40; its record is in safe@warm-pid/), so two from-scratch
# recipes with OmniSafe's Adam multiplier were compared there: a limit of 15 (safe@limit15/:
# its best snapshot 3.6 / 16.9 at 1.7M) and a curriculum from 80 down to 15 (DSRL's), which
# is the committed safe/ (4.4 / 18.0 at 4.5M, both on 20 selection episodes).
# CarButton1's safe job uses the PointButton1 recipe that found a qualifying snapshot first
# (limit 15 from scratch): OmniSafe's PPO-Lag never reaches cost 25 there (55.5 at 10M).
# PointGoal1's first unsafe policy (seed 1, 1.5M steps; in git history at bac05fe) ended at
# cost 41.6, below the bar of 50, with epoch costs between 41 and 61. The committed one is a
# second seed with snapshots, chosen by cost >= 55 on 40 episodes of its own (the bar is then
# judged on the 50 quality episodes, not these): its 1M snapshot, 25.1 / 48.6. A bound of 60,
# tried first, chose the 500k snapshot, whose return (20.0) is not above the safe one's; on 100
# selection episodes every snapshot with return above 22 has cost 47-50 (README there).
# Usage: nohup demonstrators/queue.sh > logs/demonstrators.out 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
ADAM_SAFE="--set cost_limit=10 --set snapshot_every=10"
warm_safe() {  # TASK: PID multiplier, warm start from the task's unsafe demonstrator
  echo "--set lagrangian=pid --set cost_limit=12 --set snapshot_every=5 --set init_from=demonstrators/$1/unsafe/policy.pt"
}
# PointGoal1's unsafe policy reached cost 46.7 at 1M steps (bar: >= 50): it continues to 1.5M.
# Budgets of the warm-started safe jobs (the issue's ~5M per safe demonstrator): CarGoal1's
# cost fell from 65 to ~30 over its first 1.8M steps; PointButton1's only from 147 to ~115
# over 1.2M (OmniSafe's PPO-Lag first reaches 25 there near 4.5M), so the Button ones get 5M.
SCRATCH_SAFE="--set cost_limit=15 --set snapshot_every=5"
lane_a=(
  "SafetyPointGoal1-v0 safe 3000000 $ADAM_SAFE"
  "SafetyCarGoal1-v0 unsafe 1000000"
  "SafetyCarGoal1-v0 safe 3000000 $(warm_safe SafetyCarGoal1-v0)"
  "SafetyPointGoal1-v0 unsafe 1000000 --seed 2 --set snapshot_every=5 -- --min-cost 55 --episodes 40"
  "SafetyPointButton1-v0 safe 5000000 $SCRATCH_SAFE --set cost_limit_start=80"
  "SafetyCarButton1-v0 unsafe 1000000"
  # CarButton1's training cost was lowest over the last 1M steps (epoch means 45 at 4-4.5M,
  # 37 at 4.5-5M; 58-155 before): the selection measures only those 10 snapshots and train.pt.
  "SafetyCarButton1-v0 safe 5000000 $SCRATCH_SAFE -- --max-cost 20 --from-step 4000000"
  # It ended below the safe bars (quality -0.4 / 42.5, random -1.6 / 67.7): PointButton1's
  # winning curriculum (limit 80 falling to 15 over the first half) is tried beside it.
  "SafetyCarButton1-v0 safe@curriculum 5000000 $SCRATCH_SAFE --set cost_limit_start=80 -- --max-cost 20 --from-step 2500000"
  # PointGoal1's BC-mix (49.3 with unsafe@2M) is not clearly less safe than BC-safe (42.9, about
  # twice the safe demonstrator's 22): a safer safe demonstrator should pull BC-safe down. Its
  # limit-10 run (epoch costs 20-55 at 3M, lambda still rising) continues from its 3M
  # checkpoint to the issue's 5M, chosen at cost <= 12 among the new snapshots (trained in
  # safe@5M/, then promoted into safe/: its 4.2M snapshot, quality 15.7 / 13.6, BC-safe 22.1).
  "SafetyPointGoal1-v0 safe 5000000 $ADAM_SAFE -- --max-cost 12 --from-step 3000000"
)
lane_b=(
  "SafetyPointButton1-v0 unsafe 1000000"
  # PointGoal1's unsafe cost (48.6 on the quality episodes) is just under the bar of 50 and its
  # BC-mix not clearly less safe than BC-safe: the committed seed-2 run continues from its 1M
  # checkpoint to 2M beside it (OmniSafe's PPO: 55.7 at 10M), chosen among the new snapshots.
  # (Trained in unsafe@2M/, promoted into unsafe/ beside the 5M safe policy.)
  "SafetyPointGoal1-v0 unsafe 2000000 --seed 2 --set snapshot_every=5 -- --min-cost 55 --episodes 40 --from-step 1100000"
  # Beside safe@5M: a PID multiplier against a limit of 5, warm-started from the committed safe
  # policy (cost 22), planned for 2M steps, stopped at 1.06M: its epoch cost stayed at 24-32
  # (lambda 4.7 -> 13.6) while its return fell from 19 to 14 (log in safe@warm-pid5/).
  # "SafetyPointGoal1-v0 safe@warm-pid5 2000000 --set lagrangian=pid --set cost_limit=5 --set snapshot_every=5 --set init_from=demonstrators/SafetyPointGoal1-v0/safe/policy.pt -- --max-cost 12"
  # CarButton1's safe bar is missed by the limit-15 and curriculum recipes (Adam multiplier):
  # CPPO-PID from scratch, the one remedy untried there. Planned for 5M steps, stopped at 1.4M:
  # lambda rose to 25 within 1.4M and the policy froze as PointButton1's warm PID run did
  # (epoch return -0.5 -> -1.0, random -1.6; cost 34-45; log in safe@pid/).
  # "SafetyCarButton1-v0 safe@pid 5000000 $SCRATCH_SAFE --set lagrangian=pid -- --max-cost 20 --from-step 2500000"
)
run() { OMP_NUM_THREADS=1 nice -n 10 uv run uniq-bench "$@"; }
trained() {  # DIR STEPS: trained for STEPS and a policy.pt chosen from that training
  python3 -c 'import json, sys; sys.exit(json.load(open(sys.argv[1])).get("trained_steps", 0) < int(sys.argv[2]))' \
    "$1/selection.json" "$2" 2>/dev/null && [ -f "$1/policy.pt" ]
}
job() {  # one job, under its lock (another copy of this script may be training it)
  local task kind steps rest dir
  read -r task kind steps rest <<< "$1"
  dir="demonstrators/$task/$kind"
  mkdir -p "$dir"
  ( flock -n 9 || { echo "running elsewhere: $1"; exit 0; }; locked_job "$task" "$kind" "$steps" "$rest" ) \
    9> "$dir/.queue.lock"
}
locked_job() {
  local task=$1 dir="demonstrators/$1/$2" kind=${2%%@*} steps=$3 rest=$4 pick seed
  pick=$([[ "$rest" == *" -- "* ]] && echo "${rest#* -- }")
  rest=${rest%% -- *}
  seed=$([ "$kind" = safe ] && echo 0 || echo 1)
  if trained "$dir" "$steps"; then echo "done already: $task $kind $steps"; return; fi
  while [[ "$rest" == *init_from* ]] && ! trained "demonstrators/$task/unsafe" 1; do
    if flock -n "demonstrators/$task/unsafe/.queue.lock" true 2> /dev/null; then  # no one on it
      echo "skipped until $task's unsafe demonstrator exists (rerun the script): $task $kind"
      return
    fi
    sleep 60  # the other lane is training the warm start
  done
  local args=(demonstrator --algo ppo --task "$task" --kind "$kind" --steps "$steps" --seed "$seed"
              --out "$dir/train.pt" --no-progress $rest)
  echo "$(date -u +%FT%TZ) $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- envs uniq || echo -dirty): uv run uniq-bench ${args[*]}" >> "$dir/command.txt"
  run "${args[@]}" 9>&- || { echo "job failed: $task $kind"; return; }
  if [ -z "$pick" ] && [ "$kind" = safe ]; then pick="--max-cost 20"; fi
  run demonstrator-select --task "$task" --dir "$dir" $pick 9>&-
  local both="demonstrators/$task"
  if [ "$dir" = "$both/$kind" ] && [ -f "$both/safe/policy.pt" ] && [ -f "$both/unsafe/policy.pt" ]; then
    run demonstrator-quality --task "$task" --dir "$both" 9>&-
  fi
}
lane() { for j in "$@"; do job "$j"; done; }
lane "${lane_a[@]}" &
lane "${lane_b[@]}" &
wait
