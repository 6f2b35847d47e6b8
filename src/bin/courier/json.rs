//! Every command's `--json FILE|-`: one JSON object, written to the file or, for
//! `-`, to stdout (the command then prints its table to stderr), and labelled
//! with the Slurm job it ran in — `"slurm": {"job_id": .., ..}`, or `null`
//! outside Slurm — so results copied off a cluster still say which job made them.

use std::path::Path;

use courier::SlurmJob;
use serde::Serialize;
use serde_json::Value;

/// `true` when `--json -` asks for the JSON on stdout.
pub(crate) fn to_stdout(path: Option<&Path>) -> bool {
    path.is_some_and(|p| p.as_os_str() == "-")
}

/// Writes `report` (which serializes to an object) with the Slurm label added.
pub(crate) fn write(path: &Path, report: &impl Serialize) -> Result<(), String> {
    let mut value = serde_json::to_value(report).map_err(|e| e.to_string())?;
    let Value::Object(fields) = &mut value else {
        return Err("a JSON report is an object".into());
    };
    let job = serde_json::to_value(SlurmJob::detect()).map_err(|e| e.to_string())?;
    fields.insert("slurm".into(), job);
    let text = serde_json::to_string_pretty(&value).map_err(|e| e.to_string())?;
    if to_stdout(Some(path)) {
        println!("{text}");
        Ok(())
    } else {
        std::fs::write(path, text + "\n").map_err(|e| format!("writing {}: {e}", path.display()))
    }
}
