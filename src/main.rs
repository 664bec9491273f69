//! The `lastmile` command line: argument parsing and wiring only. Every
//! algorithm lives in the workspace crates (`roadgraph`, `engine`, `ingest`).

mod bench;
mod calibrate;
mod cluster;
mod commands;
mod eta_eval;
mod feeds;
mod history;
mod hooks_cmd;
mod live_demo;
mod osmand_replay;
mod progress;
mod service;
mod tracking;
mod zones_cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "lastmile",
    version,
    about = "Last-mile delivery tracking engine"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Import an OpenStreetMap PBF into a graph snapshot.
    Import(commands::ImportArgs),
    /// Generate a synthetic city of about N edges.
    Generate(commands::GenerateArgs),
    /// Print counts, bounding box, size and road classes of a graph.
    Info(commands::InfoArgs),
    /// Shortest route between two coordinates.
    Route(commands::RouteArgs),
    /// All-to-all matrix of distances and durations between points (JSON).
    Table(commands::TableArgs),
    /// Drive simulated vehicles over a graph and write their noisy pings with ground truth.
    Simulate(tracking::SimulateArgs),
    /// Map-match a trace (CSV or GPX) and write the matched positions.
    Match(tracking::MatchArgs),
    /// Map-match a trace with ground truth and report accuracy (or the Kubička benchmark).
    Evaluate(tracking::EvaluateArgs),
    /// A simulated delivery day through the whole engine, in process: throughput, latency, memory, ETA error.
    Bench(bench::BenchArgs),
    /// Fit the free-flow speeds and junction delays to matched traversals of real trips.
    Calibrate(calibrate::CalibrateArgs),
    /// Real trips through the engine: learn from half, judge the ETAs and windows on the other half.
    EtaEval(eta_eval::EtaEvalArgs),
    /// Run the QUIC service: pings in, ETAs, positions and events out.
    Serve(service::ServeArgs),
    /// Replay a trace against a server and report throughput and ack latency.
    Replay(service::ReplayArgs),
    /// Assign routes (a stops CSV) to vehicles on a server.
    Assign(service::AssignArgs),
    /// A vehicle's position, status and stop ETAs, or one stop's ETA.
    Eta(service::EtaArgs),
    /// Follow the event stream (optionally filtered).
    Watch(service::WatchArgs),
    /// A vehicle's matched path over a time range, from a server's store or its cluster's (GeoJSON or CSV).
    History(history::HistoryArgs),
    /// Dispatcher commands on stops: complete, fail, remove, reassign, track.
    Dispatch(service::DispatchArgs),
    /// A server's counters as JSON.
    Stats(service::StatsArgs),
    /// A cluster of lastmile nodes on NATS: its nodes, partitions, owners and lag.
    Cluster(cluster::ClusterArgs),
    /// A fleet's zones on a server: put (GeoJSON), remove, list.
    Zones(zones_cmd::ZonesArgs),
    /// The whole pipeline on the built-in synthetic city (no download needed).
    Demo(commands::DemoArgs),
    /// Hold many tracking pages' event feeds open on a server's HTTP side and
    /// measure event-to-feed latency and the server's memory per feed.
    Feeds(feeds::FeedsArgs),
    /// A server's webhook endpoints: backlog, deliveries, last errors.
    Webhooks(hooks_cmd::WebhooksArgs),
    /// A webhook receiver for benchmarks: verifies signatures, counts, reports the rate.
    WebhookSink(hooks_cmd::SinkArgs),
}

fn main() -> ExitCode {
    // Errors are reported as one line; a panic (a bug) must not print a
    // backtrace either, so the hook keeps quiet and the message is printed
    // once below. Panics that the importer catches never reach the user.
    std::panic::set_hook(Box::new(|_| {}));
    let cli = Cli::parse();
    let outcome = std::panic::catch_unwind(|| match cli.command {
        Command::Import(a) => commands::import(a),
        Command::Generate(a) => commands::generate(a),
        Command::Info(a) => commands::info(a),
        Command::Route(a) => commands::route(a),
        Command::Table(a) => commands::table(a),
        Command::Simulate(a) => tracking::simulate_cmd(a),
        Command::Match(a) => tracking::match_cmd(a),
        Command::Evaluate(a) => tracking::evaluate_cmd(a),
        Command::Bench(a) => bench::bench_cmd(a),
        Command::EtaEval(a) => eta_eval::eta_eval(a),
        Command::Calibrate(a) => calibrate::calibrate(a),
        Command::Serve(a) => service::serve(a),
        Command::Replay(a) => service::replay(a),
        Command::Assign(a) => service::assign(a),
        Command::Eta(a) => service::eta(a),
        Command::Watch(a) => service::watch(a),
        Command::History(a) => history::history(a),
        Command::Dispatch(a) => service::dispatch(a),
        Command::Stats(a) => service::stats(a),
        Command::Cluster(a) => cluster::cluster(a),
        Command::Zones(a) => zones_cmd::zones(a),
        Command::Demo(a) => commands::demo(a),
        Command::Feeds(a) => feeds::feeds(a),
        Command::Webhooks(a) => hooks_cmd::webhooks(a),
        Command::WebhookSink(a) => hooks_cmd::sink(a),
    });
    match outcome {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e:#}");
            // "No road joins these points" is an answer scripts test for.
            if e.downcast_ref::<commands::NoRoute>().is_some() {
                ExitCode::from(commands::NoRoute::EXIT_CODE)
            } else {
                ExitCode::FAILURE
            }
        }
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            // The reader of our output went away (`lastmile ... | head`):
            // stop quietly, as Unix tools do, with the SIGPIPE status.
            if msg.contains("failed printing to stdout") && msg.contains("Broken pipe") {
                return ExitCode::from(141);
            }
            eprintln!("error: internal error (please report): {msg}");
            ExitCode::from(101)
        }
    }
}
