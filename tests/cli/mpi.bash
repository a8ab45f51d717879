# Helpers for the tests that run camelid under mpirun (sourced after lib.bash, not run).
# mpi N ARGS... (or "${MPIRUN[@]}" N ARGS... after timeout): mpirun with N ranks on this machine (more ranks than cores: --oversubscribe; as root OpenMPI
# wants its two opt-in variables). A camelid built without MPI cannot be tested here: then the script checks
# that it refuses to run as one of several ranks, and stops.
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# containers often forbid the cross-memory attach the shared-memory transport tries first
export OMPI_MCA_btl_vader_single_copy_mechanism=none
MPIRUN=(mpirun --oversubscribe -np)
mpi() { "${MPIRUN[@]}" "$@"; }
# mpi_rank_pid MPIRUN_PID RANK: the pid of that rank among mpirun's children
mpi_rank_pid() {
    local p
    for p in $(pgrep -P "$1"); do
        if tr '\0' '\n' <"/proc/$p/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then
            echo "$p"
            return
        fi
    done
}
if ! ldd "$BIN" | grep -q libmpi; then
    OMPI_COMM_WORLD_SIZE=2 "$BIN" train --config stories260K --data "$TMP" --out "$TMP/x" >"$TMP/nompi" 2>&1 &&
        fail "a build without MPI ran as one of 2 ranks" ||
        { grep -q "built without MPI" "$TMP/nompi" && pass "a build without MPI refuses to run as one of 2 ranks" ||
            fail "message: $(cat "$TMP/nompi")"; }
    echo "note: $BIN has no MPI (cmake -DCAMELID_MPI=OFF or no libopenmpi-dev): the mpirun tests do not apply" >&2
    finish
fi
command -v mpirun >/dev/null || { fail "mpirun is missing (scripts/deps.sh installs openmpi-bin)"; finish; }
# Under AddressSanitizer, LeakSanitizer reports what libmpi and its plugins keep until exit: those are
# suppressed (lsan-mpi.supp names only OpenMPI's libraries), camelid's own leaks are still reported. The
# suppressions need whole stacks (the fast unwinder stops at the first frame inside OpenMPI) and the plugins
# kept loaded at exit (else their frames are "unknown module").
SANITIZED=0
if ldd "$BIN" | grep -q libasan; then
    SANITIZED=1
    export LSAN_OPTIONS="suppressions=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)/lsan-mpi.supp:print_suppressions=0${LSAN_OPTIONS:+:$LSAN_OPTIONS}"
    export ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}fast_unwind_on_malloc=0"
    export OMPI_MCA_mca_base_component_disable_dlclose=1 PMIX_MCA_mca_base_component_disable_dlclose=1
fi
