//! `tandem-sim`: runs the deterministic failover simulator over many seeds, or replays one.

use crate::{self as sim, SimConfig};
use clap::Parser;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "tandem-sim",
    version,
    about = "Deterministic failover simulation: two servers (three, in two relationships, in a quarter of the runs), many clients, faults from a seed. A failing seed replays exactly with --seed.",
    after_help = "Exit codes: 0 every seed passed, 1 a seed failed (its seed and trace are printed)."
)]
struct Cli {
    /// Replay exactly this seed (prints its report).
    #[arg(long)]
    seed: Option<u64>,
    /// How many seeds to run, starting at --first.
    #[arg(long, default_value_t = 100)]
    seeds: u64,
    /// First seed of the sweep.
    #[arg(long, default_value_t = 1)]
    first: u64,
    /// Stop the sweep after this many seconds of wall time (a soak: raise both).
    #[arg(long, default_value_t = 600)]
    max_secs: u64,
    /// With --seed: print every simulated event to stderr.
    #[arg(long)]
    trace: bool,
    /// Sweep on past a failing seed (a soak): print each failure as it comes, list the failed
    /// seeds at the end, and exit 1 if there was any.
    #[arg(long)]
    keep_going: bool,
    /// Both servers forget the records of leases that ended this many seconds ago
    /// (`server.keep_ended_secs`; 0, the default, keeps them as the seeds were found with).
    #[arg(long, default_value_t = 0)]
    keep_ended_secs: u64,
    /// Run every seed with one pair, without the m-to-1 mode (a hub and two relationships): how
    /// seeds found before that mode existed replay as they were found.
    #[arg(long)]
    one_pair: bool,
}

impl Cli {
    /// The knobs of `seed` under these flags.
    fn config(&self, seed: u64) -> SimConfig {
        let cfg = SimConfig {
            keep_ended_secs: self.keep_ended_secs,
            trace_all: self.trace,
            ..SimConfig::from_seed(seed)
        };
        if self.one_pair { cfg.one_pair() } else { cfg }
    }
}

/// Runs `tandem-sim` with the process's arguments.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(seed) = cli.seed {
        let cfg = cli.config(seed);
        println!("seed {seed}: {cfg:?}");
        return match sim::run(seed, &cfg) {
            Ok(r) => {
                println!("passed: {r:?}");
                ExitCode::SUCCESS
            }
            Err(f) => {
                println!("{f}");
                ExitCode::from(1)
            }
        };
    }
    let t0 = Instant::now();
    let (mut passed, mut grants, mut crashes, mut wipes, mut partitions, mut worst) =
        (0u64, 0u64, 0u64, 0u64, 0u64, 0u64);
    let mut forgotten = 0u64;
    // Declines, Confirms, relayed grants, address+prefix grants, split-brain double grants,
    // m-to-1: grants in the second relationship, times the hub's relationships were apart.
    let mut modes = [0u64; 7];
    let mut failed: Vec<u64> = Vec::new();
    let mut last = None;
    for seed in cli.first..cli.first.saturating_add(cli.seeds) {
        if t0.elapsed() > Duration::from_secs(cli.max_secs) {
            println!("time limit reached after {passed} seeds");
            break;
        }
        last = Some(seed);
        let cfg = SimConfig {
            trace_all: false,
            ..cli.config(seed)
        };
        match sim::run(seed, &cfg) {
            Ok(r) => {
                passed += 1;
                grants += r.grants;
                crashes += r.crashes as u64;
                wipes += r.wipes as u64;
                partitions += r.partitions as u64;
                forgotten += r.forgotten;
                for (m, v) in modes.iter_mut().zip([
                    r.declines,
                    r.confirms,
                    r.relayed_grants,
                    r.both_ia_grants,
                    r.split_conflicts,
                    r.second_relationship_grants,
                    r.hub_states_apart,
                ]) {
                    *m += v;
                }
                worst = worst.max(r.converged_after_secs);
            }
            Err(f) => {
                println!("{f}");
                failed.push(seed);
                if !cli.keep_going {
                    break;
                }
            }
        }
    }
    let range = last.map_or("no seed run".to_string(), |l| {
        format!("seeds {}..={l}", cli.first)
    });
    println!(
        "{passed} seeds passed in {:.1}s ({range}): {grants} leases granted, {crashes} crashes ({wipes} wiped), {partitions} partitions, {forgotten} ended records forgotten, slowest convergence {worst}s simulated",
        t0.elapsed().as_secs_f64()
    );
    println!(
        "mixed runs: {} declines, {} confirms, {} grants through the relay, {} address+prefix grants; split-brain runs: {} double grants resolved by healing",
        modes[0], modes[1], modes[2], modes[3], modes[4]
    );
    println!(
        "m-to-1 runs: {} grants in the second relationship, {} state changes leaving the hub's two relationships in different states",
        modes[5], modes[6]
    );
    println!("simulation: {passed} passed, {} failed", failed.len());
    if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        println!("failed seeds: {failed:?}");
        ExitCode::from(1)
    }
}
