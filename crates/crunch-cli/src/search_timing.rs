//! Where a budget search's time goes: the `--json` record's `search.timing` (decision 124).
//! Wall seconds of each stage, and CPU seconds beside them: on a shared machine the search's
//! cost is its CPU time more than its wall time.

use crunch_search::FitnessTiming;
use serde_json::json;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// CPU seconds (user + system) of this process so far, from `/proc/self/stat` (Linux; `None`
/// elsewhere).
pub(crate) fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // Fields after the command name (which may hold spaces, hence the last ')'): state is the
    // 3rd field, utime and stime the 14th and 15th, in clock ticks (USER_HZ, 100 on Linux).
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// The clock of one search (one budget): each generation's and each fill round's end,
/// counted from the search's start (the seeds are scored before the first generation).
pub(crate) struct SearchClock {
    t0: Instant,
    cpu0: Option<f64>,
    generation_ends: Vec<f64>,
    generation_cpu: Vec<Option<f64>>,
    fill_ends: Vec<f64>,
    /// The fitness's counters, read at each generation's end: what each generation spent
    /// (the first also holds the seeds).
    fitness: Arc<Mutex<FitnessTiming>>,
    fitness_last: FitnessTiming,
    generation_fitness: Vec<FitnessTiming>,
}

impl SearchClock {
    /// Starts the clock; `fitness`: the search's fitness counters, to split per generation.
    pub fn start(fitness: Arc<Mutex<FitnessTiming>>) -> Self {
        let fitness_last = *fitness.lock().expect("timing lock");
        SearchClock {
            t0: Instant::now(),
            cpu0: cpu_seconds(),
            generation_ends: Vec::new(),
            generation_cpu: Vec::new(),
            fill_ends: Vec::new(),
            fitness,
            fitness_last,
            generation_fitness: Vec::new(),
        }
    }

    /// A generation (`fill` false) or a fill round has ended.
    pub fn lap(&mut self, fill: bool) {
        let t = self.t0.elapsed().as_secs_f64();
        if fill {
            self.fill_ends.push(t);
        } else {
            self.generation_ends.push(t);
            self.generation_cpu.push(self.cpu_since());
            let now = *self.fitness.lock().expect("timing lock");
            self.generation_fitness.push(now.since(&self.fitness_last));
            self.fitness_last = now;
        }
    }

    fn cpu_since(&self) -> Option<f64> {
        cpu_seconds().zip(self.cpu0).map(|(a, b)| a - b)
    }

    /// The search's part of `search.timing`, at its end.
    pub fn record(&self) -> serde_json::Value {
        json!({
            "generation_end_s": self.generation_ends,
            "generation_end_cpu_s": self.generation_cpu,
            "fill_end_s": self.fill_ends,
            "end_s": self.t0.elapsed().as_secs_f64(),
            "end_cpu_s": self.cpu_since(),
            "generation_fitness": self.generation_fitness,
        })
    }
}

/// Adds the stages before the search (calibration windows, variants) and the process's CPU
/// seconds so far to a search's `timing` record.
pub(crate) fn add_stages(timing: &mut serde_json::Value, calibration_s: f64, variants_s: f64) {
    timing["calibration_s"] = json!(calibration_s);
    timing["variants_s"] = json!(variants_s);
    timing["total_cpu_s"] = json!(cpu_seconds());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_records_generations_and_fill_rounds_apart() {
        let counters = Arc::new(Mutex::new(FitnessTiming::default()));
        let mut c = SearchClock::start(counters.clone());
        counters.lock().unwrap().layers_swapped = 3;
        c.lap(false);
        c.lap(false);
        c.lap(true);
        let r = c.record();
        assert_eq!(r["generation_end_s"].as_array().unwrap().len(), 2);
        assert_eq!(r["generation_end_cpu_s"].as_array().unwrap().len(), 2);
        assert_eq!(r["fill_end_s"].as_array().unwrap().len(), 1);
        let per = r["generation_fitness"].as_array().unwrap();
        assert_eq!(per.len(), 2);
        assert_eq!(per[0]["layers_swapped"], 3);
        assert_eq!(per[1]["layers_swapped"], 0);
        assert!(r["end_s"].as_f64().unwrap() >= 0.0);
        if cfg!(target_os = "linux") {
            assert!(cpu_seconds().is_some_and(|s| s >= 0.0));
        }
    }
}
