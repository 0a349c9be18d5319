//! Reading a provisioning script's progress back from an instance's
//! console output: the marker lines of one bake (its nonce), the output of
//! a step that failed. Console output is whatever the instance printed —
//! the boot's own lines interleave, and on EC2 it arrives late and may be
//! cut — so anything that is not this bake's marker or a step's indented
//! output is ignored. Not here: fetching the console (the builder does).

use crate::script::MARKER;

/// Where a bake's provisioning stands, as its console shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// Still running (or not started): `finished` steps ended with 0.
    Running { finished: usize },
    /// Every step ended with 0.
    Done,
    /// Step number `step` (from 0) exited `code`, having printed `output`
    /// (its last lines).
    Failed {
        step: usize,
        code: i32,
        output: String,
    },
}

/// The most of a failed step's output kept for its error, in lines.
const OUTPUT_LINES: usize = 40;

/// The progress of the bake `nonce` in `console`.
pub fn read_progress(nonce: &str, console: &str) -> Progress {
    let mut finished = 0;
    let mut output: Vec<&str> = Vec::new();
    for line in console.lines() {
        let line = line.trim_end_matches('\r');
        if let Some(text) = line.strip_prefix("  | ") {
            output.push(text);
            continue;
        }
        if line == "  |" {
            output.push("");
            continue;
        }
        let mut words = line.split(' ');
        if words.next() != Some(MARKER) || words.next() != Some(nonce) {
            continue;
        }
        match words.collect::<Vec<_>>().as_slice() {
            ["begin", _] => output.clear(),
            ["end", step, "exit", code] => {
                let (Ok(step), Ok(code)) = (step.parse::<usize>(), code.parse::<i32>()) else {
                    continue;
                };
                if code != 0 {
                    let skip = output.len().saturating_sub(OUTPUT_LINES);
                    return Progress::Failed {
                        step,
                        code,
                        output: output[skip..].join("\n"),
                    };
                }
                finished = step + 1;
            }
            ["done"] => return Progress::Done,
            _ => {}
        }
    }
    Progress::Running { finished }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_lines_around_the_markers_are_ignored() {
        let console = "\
[endstate] boot
endstate-bake abc begin 0
  | hello
endstate-bake abc end 0 exit 0
Cloud-init v. 24 running
endstate-bake abc begin 1
";
        assert_eq!(
            read_progress("abc", console),
            Progress::Running { finished: 1 }
        );
        let done = format!("{console}endstate-bake abc end 1 exit 0\nendstate-bake abc done\r\n");
        assert_eq!(read_progress("abc", &done), Progress::Done);
    }

    #[test]
    fn a_failure_keeps_the_last_lines_of_its_step_only() {
        let mut console = String::from("endstate-bake n begin 0\n  | not this\nendstate-bake n end 0 exit 0\nendstate-bake n begin 1\n");
        for i in 0..100 {
            console.push_str(&format!("  | line {i}\n"));
        }
        console.push_str("endstate-bake n end 1 exit 127\n");
        let Progress::Failed { step, code, output } = read_progress("n", &console) else {
            panic!("not failed");
        };
        assert_eq!((step, code), (1, 127));
        assert_eq!(output.lines().count(), OUTPUT_LINES);
        assert!(output.ends_with("line 99"));
        assert!(!output.contains("not this"));
    }
}
