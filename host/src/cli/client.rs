//! The CLI's client for a running daemon: submit, status, cancel.

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

async fn answer(response: reqwest::Response) -> Result<Value> {
    let status = response.status();
    let body: Value = response.json().await.context("the daemon's answer is not JSON")?;
    if !status.is_success() {
        bail!("{} ({status})", body["error"].as_str().unwrap_or("request failed"));
    }
    Ok(body)
}

/// The HTTP client, sending `$CHIMERA_TOKEN` (if set) as the bearer
/// token: from the environment, not a flag, so it never shows in `ps`.
fn client() -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Ok(token) = std::env::var("CHIMERA_TOKEN") {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
            .context("CHIMERA_TOKEN is not a valid header value")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    Ok(reqwest::Client::builder().no_proxy().default_headers(headers).build()?)
}

fn unreachable(server: &str) -> String {
    format!("cannot reach the daemon at {server}; start it with `chimera serve` or pass --server")
}

pub async fn submit(
    server: String,
    agent: String,
    inputs: Vec<String>,
    priority: String,
    deadline_ms: Option<u64>,
    wait: bool,
) -> Result<ExitCode> {
    let http = client()?;
    let mut ids = Vec::new();
    for input in inputs {
        let input = super::read_input(&input)?;
        let body = json!({"agent": agent, "input": input, "priority": priority, "deadline_ms": deadline_ms});
        let r =
            http.post(format!("{server}/v1/tasks")).json(&body).send().await.with_context(|| unreachable(&server))?;
        let id = answer(r).await?["id"].as_str().context("no id in the answer")?.to_string();
        if !wait {
            out!("{id}");
        }
        ids.push(id);
    }
    if !wait {
        return Ok(ExitCode::SUCCESS);
    }
    // Live status on stderr until every task is final, then the results.
    let mut records: Vec<Value> = vec![Value::Null; ids.len()];
    loop {
        for (i, id) in ids.iter().enumerate() {
            if records[i]["status"].as_str().is_some_and(is_final) {
                continue;
            }
            let r = http.get(format!("{server}/v1/tasks/{id}")).send().await.with_context(|| unreachable(&server))?;
            records[i] = answer(r).await?;
        }
        let count = |s: &str| records.iter().filter(|r| r["status"] == s).count();
        let done = records.iter().filter(|r| r["status"].as_str().is_some_and(is_final)).count();
        eprint!(
            "\r{done}/{} done: {} completed, {} failed, {} running, {} pending   ",
            ids.len(),
            count("completed"),
            done - count("completed"),
            count("running"),
            count("pending")
        );
        std::io::stderr().flush().ok();
        if done == ids.len() {
            eprintln!();
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut ok = true;
    for r in &records {
        match r["status"].as_str() {
            Some("completed") => out!("{} {}", r["id"].as_str().unwrap_or("?"), r["output"].as_str().unwrap_or("")),
            status => {
                ok = false;
                out!("{} {} {}", r["id"].as_str().unwrap_or("?"), status.unwrap_or("?"), r["error"]);
            }
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn is_final(status: &str) -> bool {
    !matches!(status, "pending" | "running")
}

pub async fn status(server: String, id: String) -> Result<ExitCode> {
    let r = client()?.get(format!("{server}/v1/tasks/{id}")).send().await.with_context(|| unreachable(&server))?;
    out!("{}", serde_json::to_string_pretty(&answer(r).await?)?);
    Ok(ExitCode::SUCCESS)
}

pub async fn cancel(server: String, id: String) -> Result<ExitCode> {
    let r = client()?.delete(format!("{server}/v1/tasks/{id}")).send().await.with_context(|| unreachable(&server))?;
    let body = answer(r).await?;
    out!("task {id}: {}", body["status"].as_str().unwrap_or("?"));
    Ok(ExitCode::SUCCESS)
}

pub async fn logs(server: String, id: String) -> Result<ExitCode> {
    let r = client()?.get(format!("{server}/v1/tasks/{id}/logs")).send().await.with_context(|| unreachable(&server))?;
    for attempt in answer(r).await?["attempts"].as_array().into_iter().flatten() {
        for line in attempt["lines"].as_array().into_iter().flatten() {
            let from = line["from"].as_str().map(|f| format!(" {f}")).unwrap_or_default();
            let fields: String = line["fields"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|kv| format!(" {}={}", kv[0].as_str().unwrap_or(""), kv[1].as_str().unwrap_or("")))
                .collect();
            out!(
                "attempt {} {} {}{from}: {}{fields}",
                attempt["attempt"],
                line["level"].as_str().unwrap_or("?"),
                line["source"].as_str().unwrap_or("?"),
                line["message"].as_str().unwrap_or("")
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
