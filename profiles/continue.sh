#!/usr/bin/env bash
# Continue a profile whose finished runs are committed, on any machine (README, "Interrupted?").
#
#   profiles/continue.sh config/quick.yaml [--cores 2]
#
# Snakemake options after the config go to every step (`--directory DIR`: all of it there).
#
# A fresh clone has the finished runs' outputs but not the data they were trained on (data
# are regenerated, bit for bit: README, "The same data on every machine"), and git gives every
# file the checkout's time. Left alone, Snakemake would retrain every run whose data it has
# to regenerate. So: (1) regenerate the data; (2) mark the committed outputs up to date
# (`--touch` only touches files that exist: an unfinished run stays unfinished); (3) run what
# is left. Trust in (2) rests on (1) giving the same bytes: every eval.json records the
# checksums of the data its run read, and `uniq-bench fingerprint` checks the machine first.
set -euo pipefail
cd "$(dirname "$0")/.."
config=${1:?usage: profiles/continue.sh CONFIG [snakemake options]}
shift
uv run uniq-bench fingerprint
uv run snakemake --configfile "$config" --until dataset --cores 2 "$@"
uv run snakemake --configfile "$config" --touch all --cores 1 --quiet "$@"
# The target comes before --configfile, which takes every word up to the next option.
uv run snakemake all --configfile "$config" --cores 2 "$@"
