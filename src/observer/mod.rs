//! `chaos-backend observe`: a traffic observer, what users of a Service see
//! while its pods fail. It sends `GET URL` at a fixed rate in an open loop
//! (latency measured from each request's due time), a new connection per
//! request so that kube-proxy spreads them over the pods, and writes JSON
//! Lines: one line a second, and a summary with availability, latency
//! percentiles, errors by class and each pod's gaps (docs/observer.md).
//!
//! A mode of the binary, not of the server: it shares the argument and
//! exit-code conventions (2 names a bad value) and nothing of the server's
//! state. It lives in the image because the image is `FROM scratch` and a
//! Service's address is reachable only from inside the cluster.
//!
//! - `options`: the arguments; `resolve`: the host's addresses (hosts file,
//!   DNS as resolv.conf asks, without glibc's resolver).
//! - `driver`: the event loop over non-blocking sockets (`os::poll`: the
//!   Linux calls it needs).
//! - `answer`: an HTTP answer's bytes to an outcome.
//! - `tally`: counts per second and for the run; `gaps`: the run in due
//!   order (error streaks, each pod's gaps).

mod answer;
mod driver;
mod gaps;
mod options;
mod resolve;
mod tally;

use std::io::Write;
use std::process::ExitCode;

use options::Command;

/// Runs `chaos-backend observe ARGS`; the exit code: 0, 1 when `--slo` was
/// missed, 2 for bad arguments.
pub fn main(args: &[String]) -> ExitCode {
    let options = match options::parse(args) {
        Ok(Command::Run(o)) => o,
        Ok(Command::Help) => {
            println!("{}", options::USAGE);
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("chaos-backend observe: {e}\nTry chaos-backend observe --help.");
            return ExitCode::from(2);
        }
    };
    let addrs = match options.target.resolve() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("chaos-backend observe: {e}");
            return ExitCode::from(2);
        }
    };
    let mut observer = match driver::Observer::new(&options, &addrs) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("chaos-backend observe: cannot set up the event loop: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let ended = match observer.run(&mut out) {
        Ok(ended) => ended,
        Err(e) => {
            eprintln!("chaos-backend observe: {e}");
            return ExitCode::FAILURE;
        }
    };
    let (summary, availability) = observer.summary(ended);
    if writeln!(out, "{summary}").and_then(|()| out.flush()).is_err() {
        return ExitCode::FAILURE;
    }
    match options.slo {
        Some(slo) if availability.is_none_or(|a| a < slo) => ExitCode::FAILURE,
        _ => ExitCode::SUCCESS,
    }
}
