// biome-ignore-all lint/suspicious/noTemplateCurlyInString: this is sh, where ${x} is sh's own
/**
 * The shell function every transport runs before a command (the local agent's prologue, the gke exec wrapper):
 * argv[0] is looked up before the exec, so that a command that is not there or cannot run gets onmemos' own one
 * line and docker exec's code, not the shell's message: a name without a slash is searched in PATH (an
 * executable regular file; 127 `command not found`), a path must exist (127), not be a directory (126) and be
 * executable (126). Its variables are locals, so a variable of the same name in the command's environment
 * reaches the command unchanged. POSIX sh plus `local` (dash, bash, busybox ash).
 */
export const COMMAND_LOOKUP = [
  'onmemos_lookup() {',
  '  local d p',
  '  case $1 in',
  '  */*)',
  `    if [ -d "$1" ]; then printf 'onmemos: %s: is a directory\\n' "$1" >&2; return 126; fi`,
  `    if [ ! -e "$1" ]; then printf 'onmemos: %s: no such file or directory\\n' "$1" >&2; return 127; fi`,
  `    if [ ! -x "$1" ]; then printf 'onmemos: %s: permission denied\\n' "$1" >&2; return 126; fi`,
  '    return 0 ;;',
  '  esac',
  '  p=$PATH:',
  '  while [ -n "$p" ]; do',
  '    d=${p%%:*}; p=${p#*:}; [ -n "$d" ] || d=.',
  '    if [ -f "$d/$1" ] && [ -x "$d/$1" ]; then return 0; fi',
  '  done',
  `  printf 'onmemos: %s: command not found\\n' "$1" >&2; return 127`,
  '}',
].join('\n');

/** cd to the working directory; a missing one exits 125, as docker exec reports it. */
export const CHANGE_DIRECTORY = `cd -- "$1" 2>/dev/null || { printf 'onmemos: no such directory: %s\\n' "$1" >&2; exit 125; }`;

/** The end of every prologue: `$1` the working directory, then argv — cd, check argv[0], and exec it. */
export const CHANGE_DIRECTORY_AND_EXEC = [
  CHANGE_DIRECTORY,
  'shift',
  COMMAND_LOOKUP,
  'onmemos_lookup "$1" || exit',
  'exec "$@"',
].join('\n');
