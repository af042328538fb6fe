//! Where a communicator's topology comes from: described in code, a topology file, or
//! discovery at init; and the dump of the one in use.

use std::path::Path;

use super::{json, Topology, TopologyError};

/// The topology a communicator plans on: `given` (an in-process world described in code),
/// else the file `topo_file` (`Config::topo_file`; checked against the job: its size, and
/// the grouping of ranks into hosts when `discovered` is known), else `discovered`, else one
/// host. Rank 0 writes it to `dump_file` (`Config::topo_dump_file`) when set.
pub fn resolve(
    topo_file: Option<&Path>,
    dump_file: Option<&Path>,
    world: usize,
    rank: usize,
    given: Option<Topology>,
    discovered: Option<Topology>,
) -> Result<Topology, TopologyError> {
    let t = match (given, topo_file) {
        (Some(t), _) => {
            t.check_matches(world, discovered.as_ref())?;
            t
        }
        (None, Some(path)) => {
            let mut t = json::load(path)?;
            t.check_matches(world, discovered.as_ref())?;
            if let Some(d) = &discovered {
                t.fill_cores_from(d);
            }
            t
        }
        (None, None) => discovered.unwrap_or_else(|| Topology::single_host(world)),
    };
    if rank == 0 {
        if let Some(path) = dump_file {
            json::save(&t, path)?;
        }
    }
    Ok(t)
}
