# shellcheck shell=bash
# Sourced by the scripts that need root for a step.

# Runs a command as root: directly when already root (a container has no sudo), else
# through sudo; with neither, says what to run as root and fails without running it.
as_root() {
  if [[ $(id -u) -eq 0 ]]; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo "$@"
  else
    local command
    printf -v command '%q ' "$@"
    echo "${0##*/}: this step needs root and sudo is not installed; run ${0##*/} as root, or run as root: ${command% }" >&2
    return 1
  fi
}
