# Sourced by the run scripts: `run_or_resume DIR CONFIG [--set K=V ...]` runs CONFIG into DIR
# with the CLI in $CLI, skips a complete run and resumes a started one (the scripts re-run
# after a kill).
run_or_resume() {
  local dir=$1
  shift
  if [ -f "$dir/metrics.json" ] && grep -q '"status": "complete"' "$dir/metrics.json"; then
    return 0
  fi
  local resume=()
  [ -d "$dir" ] && resume=(--resume)
  $CLI run "$@" --run-dir "$dir" "${resume[@]}"
}

# `report_finished DIR ...`: `report` over the DIRs that hold metrics, their own (a single
# run) or at least one seed's (a multi-seed parent); a run that never started is left out, and
# with none at all nothing is called.
report_finished() {
  local found=() dir
  for dir in "$@"; do
    if [ -f "$dir/metrics.json" ] || compgen -G "$dir/seed*/metrics.json" > /dev/null; then
      found+=("$dir")
    fi
  done
  if [ ${#found[@]} -gt 0 ]; then $CLI report "${found[@]}"; fi
}
