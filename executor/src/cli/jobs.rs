//! `pbs-executor jobs list` and `jobs show`: the local ledger's history, as text or JSON.

use std::path::Path;

use anyhow::Result;

use crate::ledger::Ledger;

/// Prints the most recent `limit` jobs, newest first (JSON lines with `json`).
pub fn list(state_dir: &Path, limit: u32, json: bool) -> Result<()> {
    let ledger = Ledger::open(&state_dir.join("ledger.sqlite"))?;
    for row in ledger.recent(limit)? {
        if json {
            println!("{}", serde_json::to_string(&row)?);
        } else {
            println!(
                "{}  {:<9}  deliveries={} attempts={} bytes={} {}",
                row.job_id,
                row.state,
                row.deliveries,
                row.attempts,
                row.bytes.unwrap_or(0),
                row.error.unwrap_or_default()
            );
        }
    }
    Ok(())
}

/// Prints one job: its state, attempts, result, message and the paths of its rclone logs.
pub fn show(state_dir: &Path, job_id: &str, json: bool) -> Result<()> {
    let ledger = Ledger::open(&state_dir.join("ledger.sqlite"))?;
    let Some(mut detail) = ledger.job_detail(job_id)? else {
        anyhow::bail!("job {job_id:?} is not in this executor's ledger");
    };
    let prefix = format!("{job_id}.");
    let logs: Vec<String> = std::fs::read_dir(state_dir.join("logs"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .map(|p| p.display().to_string())
        .collect();
    detail["logs"] = serde_json::json!(logs);
    if json {
        println!("{}", serde_json::to_string_pretty(&detail)?);
    } else {
        print_job(&detail);
    }
    Ok(())
}

fn print_job(d: &serde_json::Value) {
    let text = |k: &str| match &d[k] {
        serde_json::Value::Null => "-".to_owned(),
        serde_json::Value::String(s) => s.clone(),
        v => v.to_string(),
    };
    println!("job        {}", text("job_id"));
    println!("rule       {}", text("template_id"));
    println!("state      {}", text("state"));
    if let Some(origin) = d["job"]["origin"].as_object() {
        println!(
            "origin     {} {}",
            origin["kind"].as_str().unwrap_or(""),
            origin["rule"].as_str().unwrap_or("")
        );
    }
    println!("source     {}", d["job"]["source"]);
    println!(
        "to         {}",
        d["job"]["destination"].as_str().unwrap_or("-")
    );
    println!("files      {} ({} bytes)", text("files"), text("bytes"));
    println!("received   {}", text("received_at"));
    println!("finished   {}", text("finished_at"));
    if d["error"].is_string() {
        println!("error      [{}] {}", text("error_class"), text("error"));
    }
    for a in d["attempt_history"].as_array().into_iter().flatten() {
        println!(
            "attempt {}  {}  {} .. {}  {}",
            a["attempt"],
            a["state"].as_str().unwrap_or(""),
            a["started_at"].as_str().unwrap_or(""),
            a["finished_at"].as_str().unwrap_or("-"),
            a["error"].as_str().unwrap_or("")
        );
    }
    for f in d["job"]["files"].as_array().into_iter().flatten() {
        println!(
            "file       {} -> {} ({} bytes)",
            f["key"].as_str().unwrap_or(""),
            f["dest_path"].as_str().unwrap_or(""),
            f["size"]
        );
    }
    for l in d["logs"].as_array().into_iter().flatten() {
        println!("log        {}", l.as_str().unwrap_or(""));
    }
}
