//! CPU lists (`2,3`, `4-7`, `0,2-3`) and pinning threads to them: the auditor's threads can be
//! kept off the cores that a coordinator's own nodes (or a benchmark's in-process nodes) use.

use std::collections::BTreeSet;

/// Parses a CPU list: comma-separated CPU numbers and inclusive ranges (`0,2-3`), each CPU
/// below the machine's count, none twice. Errors name the part that was wrong.
pub fn parse_list(s: &str) -> Result<Vec<usize>, String> {
    let count = count();
    let mut cpus = BTreeSet::new();
    for part in s.split(',').map(str::trim) {
        let num = |x: &str| {
            x.trim().parse::<usize>().map_err(|_| {
                format!("`{part}` in the CPU list `{s}` is not a CPU number or a range like 2-3")
            })
        };
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => (num(part)?, num(part)?),
        };
        if lo > hi {
            return Err(format!(
                "`{part}` in the CPU list `{s}` is a range that runs backwards"
            ));
        }
        if hi >= count {
            return Err(format!(
                "CPU {hi} in the CPU list `{s}` does not exist: this machine has CPUs 0-{}",
                count - 1
            ));
        }
        for c in lo..=hi {
            if !cpus.insert(c) {
                return Err(format!("CPU {c} appears twice in the CPU list `{s}`"));
            }
        }
    }
    Ok(cpus.into_iter().collect())
}

/// CPUs of this machine (online, as the OS numbers them).
pub fn count() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Every CPU of the machine not in `cpus`.
pub fn others(cpus: &[usize]) -> Vec<usize> {
    (0..count()).filter(|c| !cpus.contains(c)).collect()
}

/// Restricts the calling thread to `cpus` (Linux; elsewhere nothing happens). An empty list
/// changes nothing.
pub fn pin_current(cpus: &[usize]) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    if !cpus.is_empty() {
        // SAFETY: `set` is a local cpu_set_t, zeroed, filled with CPU_SET for indices checked
        // against its capacity, and passed with its own size.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_ZERO(&mut set);
            let cap = 8 * std::mem::size_of::<libc::cpu_set_t>();
            for &c in cpus.iter().filter(|&&c| c < cap) {
                libc::CPU_SET(c, &mut set);
            }
            if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cpus;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_and_bad_ones_say_why() {
        assert_eq!(parse_list("0").unwrap(), vec![0]);
        if count() >= 2 {
            assert_eq!(parse_list("1,0").unwrap(), vec![0, 1]);
            assert_eq!(parse_list("0-1").unwrap(), vec![0, 1]);
            assert!(parse_list("0,0-1").unwrap_err().contains("twice"));
            assert!(parse_list("1-0").unwrap_err().contains("backwards"));
        }
        assert!(parse_list("x").unwrap_err().contains("`x`"));
        assert!(parse_list("").unwrap_err().contains("not a CPU number"));
        let missing = parse_list(&count().to_string()).unwrap_err();
        assert!(missing.contains("does not exist"), "{missing}");
        assert_eq!(others(&[0]).len(), count() - 1);
    }

    #[test]
    fn a_pinned_thread_runs_where_it_was_pinned() {
        std::thread::spawn(|| {
            pin_current(&[0]).unwrap();
            #[cfg(target_os = "linux")]
            // SAFETY: sched_getcpu takes no arguments.
            assert_eq!(unsafe { libc::sched_getcpu() }, 0);
        })
        .join()
        .unwrap();
    }
}
