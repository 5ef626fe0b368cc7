//! Running external programs and timing the steps of a command.
//!
//! Programs inherit the terminal, so their output reaches it unchanged and in
//! order with ours (Rust's stdout is line-buffered and every line we print is
//! whole).

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};

/// Runs `command` to completion with inherited output, and fails unless it
/// exits successfully.
pub fn run(command: &mut Command) -> Result<()> {
    let shown = describe(command);
    println!("$ {shown}");
    let status = command
        .status()
        .with_context(|| format!("could not start `{shown}` (is it installed and on PATH?)"))?;
    if !status.success() {
        bail!("`{shown}` failed ({status})");
    }
    Ok(())
}

/// What `command` prints on stdout, trimmed, when it starts and succeeds;
/// `None` otherwise. For probing whether a tool is there and which version.
pub fn probe(command: &mut Command) -> Option<String> {
    let output = command.output().ok()?;
    output.status.success().then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
}

/// The program and its arguments as one line, for messages.
fn describe(command: &Command) -> String {
    std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|part| part.to_string_lossy())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The steps a command has run so far and how long each took.
#[derive(Default)]
pub struct Steps {
    done: Vec<(String, Duration)>,
}

impl Steps {
    /// Runs one named step, printing its name before and its time after. A
    /// failure is wrapped in a message naming the step.
    pub fn run<T>(&mut self, name: &str, step: impl FnOnce() -> Result<T>) -> Result<T> {
        println!("\n==> {name}");
        let started = Instant::now();
        let result = step();
        let elapsed = started.elapsed();
        match result {
            Ok(value) => {
                println!("==> {name}: ok in {}", human(elapsed));
                self.done.push((name.to_string(), elapsed));
                Ok(value)
            }
            Err(err) => Err(err.context(format!("step `{name}` failed after {}", human(elapsed)))),
        }
    }

    /// Prints every step with its time, and the total.
    pub fn print_summary(&self) {
        println!("\n==> steps:");
        for (name, elapsed) in &self.done {
            println!("    {:>8}  {name}", human(*elapsed));
        }
        let total: Duration = self.done.iter().map(|(_, elapsed)| *elapsed).sum();
        println!("    {:>8}  total", human(total));
    }
}

/// A duration as a person reads it: `4.2s`, `12m 05s`.
fn human(duration: Duration) -> String {
    let seconds = duration.as_secs_f64();
    if seconds < 60.0 {
        format!("{seconds:.1}s")
    } else {
        let whole = duration.as_secs();
        format!("{}m {:02}s", whole / 60, whole % 60)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_as_seconds_then_minutes() {
        assert_eq!(human(Duration::from_millis(4_240)), "4.2s");
        assert_eq!(human(Duration::from_secs(725)), "12m 05s");
    }

    #[test]
    fn probe_reads_stdout_and_ignores_missing_programs() {
        assert_eq!(
            probe(Command::new("echo").arg("trunk 0.21.14")).as_deref(),
            Some("trunk 0.21.14")
        );
        assert_eq!(probe(&mut Command::new("surely-not-a-program-here")), None);
        assert_eq!(probe(&mut Command::new("false")), None);
    }
}
