//! `with-cluster KIND -- COMMAND...`: runs one command against a local cluster of that kind
//! (`dask`: a scheduler and two workers; `slurm`: a private one-node Slurm), started before it
//! and stopped after it, the command's environment pointing its drivers at the cluster. It
//! is how the README's `complete` example runs on `dask` or `slurm` on a machine with no
//! cluster of its own:
//!
//! ```text
//! cargo xtask with-cluster slurm -- cargo run --release --features slurm --example complete -- slurm True 16 True
//! ```

use crate::service::Service;
use std::process::{Command, ExitCode};

/// The kinds that have a local cluster here.
const KINDS: [&str; 2] = ["dask", "slurm"];

/// Parses `KIND -- COMMAND...`.
fn parse(args: &[String]) -> Result<(&str, &[String]), String> {
    let Some((kind, rest)) = args.split_first() else {
        return Err("with-cluster needs a kind and a command: with-cluster slurm -- COMMAND...".into());
    };
    if !KINDS.contains(&kind.as_str()) {
        return Err(format!(
            "with-cluster: no local cluster for kind {kind:?} (there is one for {})",
            KINDS.join(", ")
        ));
    }
    let command = match rest.split_first() {
        Some((sep, command)) if sep == "--" => command,
        _ => rest,
    };
    if command.is_empty() {
        return Err(format!("with-cluster {kind}: no command given (with-cluster {kind} -- COMMAND...)"));
    }
    Ok((kind, command))
}

/// Runs `with-cluster`: the command's exit code, or 1 if the cluster did not start, 2 on a
/// usage error.
pub fn with_cluster(args: &[String]) -> ExitCode {
    let (kind, command) = match parse(args) {
        Ok(p) => p,
        Err(e) => return crate::usage_error(&e),
    };
    // The cluster lives on this thread until the command has ended.
    let service = match Service::start(kind) {
        Ok(Some(s)) => s,
        Ok(None) => return crate::usage_error(&format!("with-cluster: kind {kind} needs no cluster")),
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(why) = service.missing() {
        eprintln!("error: no local {kind} cluster here: {why}");
        return ExitCode::FAILURE;
    }
    let mut cmd = Command::new(&command[0]);
    cmd.args(&command[1..]);
    service.launch_env(&mut cmd, None);
    eprintln!("with a local {kind} cluster: {}", command.join(" "));
    match cmd.status() {
        Ok(status) => match status.code() {
            Some(0) => ExitCode::SUCCESS,
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => {
                eprintln!("error: {} ended by a signal: {status}", command[0]);
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("error: cannot run {}: {e}", command[0]);
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn kind_and_command() {
        let a = args(&["slurm", "--", "echo", "hi"]);
        let (kind, command) = parse(&a).unwrap();
        assert_eq!((kind, command), ("slurm", &a[2..]));
        let a = args(&["dask", "true"]);
        assert_eq!(parse(&a).unwrap().1, &a[1..]);
        assert!(parse(&args(&["k8s", "--", "true"])).unwrap_err().contains("no local cluster for kind \"k8s\""));
        assert!(parse(&args(&["slurm", "--"])).unwrap_err().contains("no command given"));
        assert!(parse(&[]).unwrap_err().contains("needs a kind"));
    }
}
