// biome-ignore-all lint/suspicious/noTemplateCurlyInString: the script is bash, where ${x} is bash's own
/**
 * removeInBackground's process: "$1" group directories, then a count and parent directories, then paths to
 * remove at the end. Polls (5 ms, a bash builtin: no process per poll) until no cgroup.procs in the subtrees
 * lists a process, then removes them with one rmdir. At most 32 levels deep, a minute in all (the reaper's REMOVAL_MS).
 */
export const REMOVER = [
  'n=$1; shift; groups=("${@:1:n}"); shift "$n"',
  'n=$1; shift; parents=("${@:1:n}"); shift "$n"',
  'exec {tick}<> <(:)',
  'tree() { local c; [ "$2" -lt 32 ] || return; for c in "$1"/*/; do [ -d "$c" ] && tree "${c%/}" $(($2 + 1)); done; dirs+=("$1"); }',
  // 5 ms apart for a second, then 100 ms apart: a killed process whose parent died waits for pid 1 to reap it,
  // and until then it still counts in its cgroup (rmdir: EBUSY), though cgroup.procs no longer lists it.
  'for ((i = 0; i < 800; i++)); do',
  '  dirs=(); for g in "${groups[@]}"; do [ -d "$g" ] && tree "$g" 0; done',
  '  [ ${#dirs[@]} -eq 0 ] && break',
  '  busy=; for d in "${dirs[@]}"; do { read -r p < "$d/cgroup.procs"; } 2>/dev/null && [ -n "$p" ] && { busy=1; break; }; done',
  '  [ -z "$busy" ] && rmdir -- "${dirs[@]}" 2>/dev/null && break',
  '  t=0.005; ((i < 200)) || t=0.1',
  '  read -r -t "$t" -u "$tick"',
  'done',
  'for g in "${groups[@]}"; do [ -d "$g" ] && exit 1; done',
  'rmdir -- "${parents[@]}" 2>/dev/null',
  '[ $# -eq 0 ] || exec rm -rf -- "$@"',
].join('\n');
