#!/usr/bin/env bash
# The readings behind README's "Results at the paper's data scale", from a finished paper_data
# run beside the quick profile's (both under results/, on this machine):
#
#   analysis/paper_data_readings.sh [EPISODES]      # EPISODES a policy for agent_reach (10)
#
# writes results/paper_data/claims.md and claims_beside_quick.md (analysis/claims.py) and, in
# results/paper_data/readings/: agent_reach_{paper_data,quick}.md (every navigation policy of
# the two profiles: distance from the arena's centre, blind steps, actions), diagnose_<task>_
# member<M>.{md,json} (uniq-bench diagnose of each UNIQ seed: ratio, implicit reward and
# advantage per group, the actor's weights against reward and cost) and commands.txt (each
# command as run). About 40 CPU-minutes on the 2-core machine it was written on.
set -euo pipefail
cd "$(dirname "$0")/.."
episodes=${1:-10}
paper=results/paper_data
quick=results/quick
out=$paper/readings
tasks=(SafetyPointGoal1-v0 SafetyPointButton1-v0)
for task in "${tasks[@]}"; do
    [[ -f $paper/runs/$task/default/uniq/seed4/policy.pt ]] || {
        echo "paper_data_readings.sh: $task's UNIQ runs have not finished; run the profile first" >&2
        exit 2
    }
done
mkdir -p "$out"
: > "$out/commands.txt"

run() {  # run "$@", its stdout into the file named by $to (none: the terminal), and log it
    echo "$* ${to:+> $to}" | tee -a "$out/commands.txt"
    if [[ -z ${to:-} ]]; then
        uv run "$@"
    else  # whole or not at all: a failed reading leaves the earlier file as it was
        uv run "$@" > "$to.part" && mv "$to.part" "$to"
    fi
}

to="" run python analysis/claims.py --results $paper
to="" run python analysis/claims.py --results $quick $paper --tasks "${tasks[@]}" \
    --out $paper/claims_beside_quick.md
for profile in paper_data quick; do
    policies=()
    for task in "${tasks[@]}"; do
        policies+=(results/$profile/runs/$task/default/*/seed[0-9]/policy.pt)
    done
    to=$out/agent_reach_$profile.md run python analysis/agent_reach.py "${policies[@]}" \
        --episodes "$episodes"
done
for task in "${tasks[@]}"; do
    for member in 0 1 2 3 4; do
        name=$out/diagnose_${task}_member$member
        to=$name.md run uniq-bench diagnose $paper/runs/$task/default/uniq/seed$member \
            --rows 5000 --batches 200 --out "$name.json"
    done
done
