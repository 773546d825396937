#!/usr/bin/env bash
# Trains the navigation demonstrators one after another, at low priority, each resumable:
# rerun this script and every job continues from its checkpoint (a finished job only
# rewrites its policy file). Jobs: TASK KIND STEPS [--set k=v ...]. The safe ones train
# against a lower limit than the evaluation's 25 (PPO-Lagrangian hovers around its target).
# Usage: nohup demonstrators/queue.sh > logs/demonstrators.out 2>&1 &
set -uo pipefail
cd "$(dirname "$0")/.."
jobs=(
  "SafetyPointGoal1-v0 unsafe 1000000"
  "SafetyPointGoal1-v0 safe 3000000 --set cost_limit=10 --set snapshot_every=10"
  "SafetyCarGoal1-v0 unsafe 1000000"
  "SafetyCarGoal1-v0 safe 3000000 --set cost_limit=10 --set snapshot_every=10"
  "SafetyPointButton1-v0 unsafe 1000000"
  "SafetyPointButton1-v0 safe 3000000 --set cost_limit=10 --set snapshot_every=10"
  "SafetyCarButton1-v0 unsafe 1000000"
  "SafetyCarButton1-v0 safe 3000000 --set cost_limit=10 --set snapshot_every=10"
)
for job in "${jobs[@]}"; do
  read -r task kind steps rest <<< "$job"
  seed=$([ "$kind" = safe ] && echo 0 || echo 1)
  out="demonstrators/$task/$kind/policy.pt"
  mkdir -p "$(dirname "$out")"
  cmd=(uv run uniq-bench demonstrator --algo ppo --task "$task" --kind "$kind" --steps "$steps"
       --seed "$seed" --out "$out" --no-progress $rest)
  echo "${cmd[*]}" > "$(dirname "$out")/command.txt"
  OMP_NUM_THREADS=1 nice -n 19 "${cmd[@]}" || echo "job failed: $job"
done
