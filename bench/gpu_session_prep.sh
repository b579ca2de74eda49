#!/usr/bin/env bash
# Prepares a bench/gpu_session.sh device call, here (no GPU needed): the baseline code in .baseline/ and the wheels
# the GPU machine lacks in .whl/ (both ignored by git; name them in the call's carry).
#
#   bash bench/gpu_session_prep.sh [BASELINE_COMMIT]     (default 9489c29, the tree issue 22's figures came from)
set -eu
BASE=${1:-9489c29}
mkdir -p .git/info
touch .git/info/exclude
for p in /.baseline/ /.gsplat-build/; do grep -qxF "$p" .git/info/exclude || echo "$p" >> .git/info/exclude; done
rm -rf .baseline
mkdir .baseline
git archive "$BASE" backend | tar -x -C .baseline
git rev-parse --short "$BASE" > .baseline/COMMIT
# What the GPU image lacks (KINDS.md): gsplat and diffusers with their dependencies missing there, plyfile, pydantic.
WHEELS="gsplat==1.5.3 diffusers==0.42.1 importlib_metadata==10.2.0 plyfile==1.1.5 pydantic==2.14.4
pydantic_core==2.50.5 annotated_types==0.8.0 typing_inspection==0.4.5 typing_extensions==4.16.0"
mkdir -p .whl
for w in $WHEELS; do
  name=${w%%==*}
  ls .whl/ | grep -qi "^${name//-/_}-${w##*==}" && continue
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl "$w"
done
du -sh .baseline .whl
git status --short --ignored .baseline .whl | head -3
