#!/usr/bin/env bash
# Commit a profile run's progress so another machine continues it (README, "On another machine").
#
#   profiles/save.sh PROFILE ["commit message"]     e.g. profiles/save.sh paper_data
#
# Stages what `profiles/continue.sh` needs and nothing it regenerates: the finished runs and
# evaluations under results/PROFILE/ (not its data), UNIQ's shared classifiers, the figures, the
# job times (logs/PROFILE/benchmarks/) and training logs (logs/PROFILE/train/: a resumed job's
# holds its time before the resume, and UNIQ's classifier gaps), and the checkpoint of every
# training job that has not finished yet, so a job hours into its updates resumes there instead
# of at zero (a job still pretraining its seeds keeps the finished ones in its folder's
# pretrain.pt, committed with the runs). A finished job's checkpoint is dropped from the index
# (its policy and logs are the result; at 256 units a five-seed checkpoint weighs tens of MB).
# Checkpoints are written whole (uniq/atomic.py), so one staged while its job runs is the
# previous whole checkpoint or the new one. Each save keeps a new copy of every running job's
# checkpoint in the history (about 7 MB a job at the quick profile's sizes, tens of MB at the
# paper's): save once per working session, at its end. It also writes results/PROFILE/progress.md
# (uniq-bench progress: each training job's state, step and rate, the time left, and each job's
# learning curve so far).
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${1:?usage: profiles/save.sh PROFILE [message]}
message=${2:-"$profile profile, in progress: finished runs, job times, unfinished jobs' checkpoints"}
runs=results/$profile/runs
[[ -d $runs ]] || { echo "save.sh: no $runs (has the $profile profile started?)" >&2; exit 2; }
if git check-ignore -q "$runs/probe"; then
    echo "save.sh: results/$profile/ is ignored by .gitignore; to commit this profile's runs add" \
        "lines like the paper_data ones there (!/results/$profile/, /results/$profile/data/," \
        "/results/$profile/runs/**/checkpoint.pt, /results/$profile/runs/**/*.part)" >&2
    exit 2
fi
ours=(results/"$profile" figures/"$profile" logs/"$profile")
if ! git diff --cached --quiet -- . "${ours[@]/#/:!}"; then
    echo "save.sh: changes outside ${ours[*]} are staged; commit or unstage them first" \
        "(git diff --cached --stat), so they do not go into the progress commit" >&2
    exit 2
fi

# A job's folder is seedS (one seed) or seedS1_S2_..._Sn (seeds trained together); the job has
# finished when each of its seeds' folders beside it holds train_log.csv (renamed from its .part
# last of all: uniq/train.py).
finished() {
    local job=$1 parent name seed
    parent=$(dirname "$job") name=$(basename "$job")
    for seed in $(tr '_' ' ' <<<"${name#seed}"); do
        [[ -f $parent/seed$seed/train_log.csv ]] || return 1
    done
}

while IFS= read -r -d '' ckpt; do
    if finished "$(dirname "$ckpt")"; then
        git rm --cached --force --quiet --ignore-unmatch -- "$ckpt"
    else
        git add --force -- "$ckpt"
        echo "unfinished: $(dirname "$ckpt")"
    fi
done < <(find "$runs" -name checkpoint.pt -print0)

# Where the run stands (uniq-bench progress), for whoever continues it: results/PROFILE/progress.md,
# with the time left when the config names the profile's price (`price:`).
config=config/$profile.yaml
[[ $profile == paper ]] && config=config/config.yaml
if [[ -f $config ]] && command -v uv >/dev/null; then
    if uv run --quiet uniq-bench progress --configfile "$config" >"results/$profile/progress.md.tmp"; then
        mv "results/$profile/progress.md.tmp" "results/$profile/progress.md"
    else
        rm -f "results/$profile/progress.md.tmp"
        echo "save.sh: uniq-bench progress failed; progress.md not written" >&2
    fi
fi

paths=(results/"$profile")
for p in figures/"$profile" logs/"$profile"/benchmarks logs/"$profile"/train; do
    [[ -e $p ]] && paths+=("$p")
done
git add -- "${paths[@]}"
if git diff --cached --quiet; then
    echo "save.sh: nothing new to commit"
else
    git commit --quiet -m "$message" && git log --oneline -1
fi
