"""The launcher variables, checked before the C library reads them, so that a missing one is
named as missing."""

from typing import Mapping, Optional

# The families the C library reads (src/config/launcher.rs), in its order: the first whose
# rank or world-size variable is set is used, and then needs both.
_LAUNCHERS = (
    ("FERROCOLL_*", "FERROCOLL_RANK", "FERROCOLL_WORLD_SIZE"),
    ("torchrun", "RANK", "WORLD_SIZE"),
    ("Open MPI mpirun", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE"),
    ("PMI", "PMI_RANK", "PMI_SIZE"),
    ("Slurm srun", "SLURM_PROCID", "SLURM_NTASKS"),
)
_STORE_FORMS = "host:port, tcp://host:port, etcd://host:port/prefix or file:DIR"


def _launch_env_error(env: Mapping[str, str]) -> Optional[str]:
    """What is missing or empty among the launcher variables of `env`, or None when the C
    library has what it needs to start (it checks the values themselves)."""
    for launcher, rank_var, world_var in _LAUNCHERS:
        rank, world = env.get(rank_var), env.get(world_var)
        if rank is None and world is None:
            continue
        for var, val, other in ((rank_var, rank, world_var), (world_var, world, rank_var)):
            if val is None:
                return (
                    f"{var} is missing: {other} is set, so this process reads the "
                    f"{launcher} launcher variables, which need both {rank_var} and {world_var}"
                )
            if not val.strip():
                return f"{var} is set but empty, expected a non-negative integer"
        store = env.get("FERROCOLL_STORE")
        if store is not None:
            if not store.strip():
                return f"FERROCOLL_STORE is set but empty, expected {_STORE_FORMS}"
            return None
        addr, port = env.get("MASTER_ADDR"), env.get("MASTER_PORT")
        if addr is None and port is None:
            return (
                f"FERROCOLL_STORE is missing, and so are MASTER_ADDR and MASTER_PORT (its "
                f"fallback): the ranks ({rank_var}, {world_var} from {launcher}) need a place "
                f"to meet, FERROCOLL_STORE={_STORE_FORMS}"
            )
        for var, val in (("MASTER_ADDR", addr), ("MASTER_PORT", port)):
            if val is None:
                return f"{var} is missing: MASTER_ADDR and MASTER_PORT go together"
            if not val.strip():
                return f"{var} is set but empty"
        return None
    return (
        "no launcher variables are set: FERROCOLL_RANK, FERROCOLL_WORLD_SIZE and "
        "FERROCOLL_STORE are missing, and so are those of torchrun (RANK, WORLD_SIZE, "
        "MASTER_ADDR, MASTER_PORT), Open MPI's mpirun (OMPI_COMM_WORLD_RANK, "
        "OMPI_COMM_WORLD_SIZE), PMI (PMI_RANK, PMI_SIZE) and Slurm's srun (SLURM_PROCID, "
        "SLURM_NTASKS). Start the program under one of these launchers, set the FERROCOLL_* "
        "variables, or use Communicator.init_rank with an id from get_unique_id()"
    )

