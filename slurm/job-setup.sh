# shellcheck shell=bash
# Sourced by the sbatch scripts in this directory (copy the directory as a whole):
# the site setup, the courier binary, the job's results directory, and one
# function that starts courier on every task of the job with srun or mpirun.
#
# Adapting to a site: set these when submitting (sbatch passes the environment
# on), or change the defaults below.
#   COURIER_MODULES   modules to load first, e.g. "openmpi/4.1.6" — the MPI courier was
#                     built against (`module load` it before `cargo build` too); empty:
#                     load nothing (MPI from the system, as on Debian/Ubuntu)
#   COURIER           the courier binary [the `courier` on PATH; cargo install --path .]
#   COURIER_LAUNCHER  srun: `srun --mpi=$COURIER_SRUN_MPI` (default); mpirun: Open MPI's
#                     mpirun inside the allocation (it reads the allocation from Slurm)
#   COURIER_SRUN_MPI  srun's MPI plugin [pmix]; see `srun --mpi=list`; MPICH builds
#                     may need pmi2
#   COURIER_ARGS      more options for every courier command (e.g. --placement scatter)
#   COURIER_OUT       results directory [$SLURM_SUBMIT_DIR/courier-results/<job name>-<job id>]
set -euo pipefail

if [[ -n ${COURIER_MODULES:-} ]]; then
  # `module` comes from the site's login environment (Lmod or Environment Modules).
  if ! type module >/dev/null 2>&1; then
    for init in /etc/profile.d/lmod.sh /etc/profile.d/modules.sh; do
      # shellcheck disable=SC1090
      [[ -r $init ]] && source "$init"
    done
  fi
  module purge
  # shellcheck disable=SC2086 # a list of modules
  module load $COURIER_MODULES
fi

courier=${COURIER:-$(command -v courier || true)}
if [[ -z $courier || ! -x $courier ]]; then
  echo "courier job: no courier binary: set COURIER=/path/to/courier or put it on PATH" \
    "(cargo install --path . in the repository)" >&2
  exit 2
fi
out=${COURIER_OUT:-${SLURM_SUBMIT_DIR:-$PWD}/courier-results/${SLURM_JOB_NAME:-courier}-${SLURM_JOB_ID:-0}}
mkdir -p "$out"
echo "courier job ${SLURM_JOB_ID:-?} (${SLURM_JOB_NAME:-?}): ${SLURM_JOB_NUM_NODES:-?} node(s)" \
  "[${SLURM_JOB_NODELIST:-?}], ${SLURM_NTASKS:-?} task(s) x ${SLURM_CPUS_PER_TASK:-1} CPU(s);" \
  "results in $out"

# courier_run THREADS ARGS...: `courier ARGS` on every task of the job, each task
# one process with THREADS rank-threads (which courier pins inside the task's
# cpuset), so the job has tasks x THREADS ranks.
courier_run() {
  local threads=$1
  shift
  # shellcheck disable=SC2206 # COURIER_ARGS is a list of options
  local extra=(${COURIER_ARGS:-})
  echo "+ ${COURIER_LAUNCHER:-srun}: ${SLURM_NTASKS} task(s) x $threads thread(s): courier $* ${extra[*]}"
  case ${COURIER_LAUNCHER:-srun} in
    srun)
      COURIER_THREADS=$threads srun --mpi="${COURIER_SRUN_MPI:-pmix}" --ntasks="$SLURM_NTASKS" \
        --cpus-per-task="$threads" "$courier" "$@" "${extra[@]}"
      ;;
    mpirun)
      # One process per Slurm task (mpirun reads the allocation); courier pins
      # its own threads, so mpirun does not bind.
      mpirun -n "$SLURM_NTASKS" --bind-to none -x COURIER_THREADS="$threads" \
        "$courier" "$@" "${extra[@]}"
      ;;
    *)
      echo "courier job: COURIER_LAUNCHER=$COURIER_LAUNCHER: expected srun or mpirun" >&2
      return 2
      ;;
  esac
}
