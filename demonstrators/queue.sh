#!/usr/bin/env bash
# Trains the navigation demonstrators one after another, at low priority, each resumable:
# rerun this script and every job continues from its checkpoint (train.checkpoint.pt; a
# finished job only rewrites train.pt). After a job: the committed policy.pt is chosen
# (safe: the best snapshot with mean cost <= 20 on 20 episodes of its own; unsafe: the
# final policy), and once both kinds of a task exist, quality.json is measured.
# Jobs: TASK KIND STEPS [--set k=v ...]. The safe ones train against a lower limit than the
# evaluation's 25 (PPO-Lagrangian hovers around, and above, its target).
# Usage: nohup demonstrators/queue.sh > logs/demonstrators.out 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
SAFE="--set cost_limit=10 --set snapshot_every=10"
jobs=(
  "SafetyPointGoal1-v0 unsafe 1000000"
  "SafetyPointGoal1-v0 safe 3000000 $SAFE"
  "SafetyCarGoal1-v0 unsafe 1000000"
  "SafetyCarGoal1-v0 safe 3000000 $SAFE"
  "SafetyPointButton1-v0 unsafe 1000000"
  "SafetyPointButton1-v0 safe 3000000 $SAFE"
  "SafetyCarButton1-v0 unsafe 1000000"
  "SafetyCarButton1-v0 safe 3000000 $SAFE"
)
run() { OMP_NUM_THREADS=1 nice -n 10 uv run uniq-bench "$@"; }
for job in "${jobs[@]}"; do
  read -r task kind steps rest <<< "$job"
  seed=$([ "$kind" = safe ] && echo 0 || echo 1)
  dir="demonstrators/$task/$kind"
  mkdir -p "$dir"
  args=(demonstrator --algo ppo --task "$task" --kind "$kind" --steps "$steps" --seed "$seed"
        --out "$dir/train.pt" --no-progress $rest)
  echo "$(date -u +%FT%TZ) $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- envs uniq || echo -dirty): uv run uniq-bench ${args[*]}" >> "$dir/command.txt"
  run "${args[@]}" || { echo "job failed: $job"; continue; }
  if [ "$kind" = safe ]; then
    run demonstrator-select --task "$task" --dir "$dir" --max-cost 20
  else
    run demonstrator-select --task "$task" --dir "$dir"
  fi
  if [ -f "demonstrators/$task/safe/policy.pt" ] && [ -f "demonstrators/$task/unsafe/policy.pt" ]; then
    run demonstrator-quality --task "$task" --dir "demonstrators/$task"
  fi
done
