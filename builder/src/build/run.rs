//! RUN steps (and WORKDIR's directory): the step's overlay is mounted in rbuild's private
//! mount namespace, the command runs in the sandbox on it, and the upper dir is committed.

use super::config;
use super::state::StageState;
use super::Env;
use super::Graph;
use crate::exec::sandbox::{self, Exit, ExtraMount, Network, Spec};
use crate::frontend::instruction::{Command, Run};
use crate::plan::{Step, PROXY_ARGS};
use anyhow::{bail, Context, Result};
use cache::LayerRef;
use std::collections::VecDeque;
use std::io::Write;

/// Lines of output shown when a step fails.
const TAIL_LINES: usize = 20;

/// The argv for a RUN, BuildKit's way with heredocs: a lone heredoc is the script itself
/// (run directly when it has a shebang, else through the shell); heredocs inside a longer
/// command are handed to the shell with their bodies, as a shell would read them.
/// Returns the script to mount at argv[0] for the shebang case.
fn run_argv(state: &StageState, r: &Run) -> (Vec<String>, Option<(String, String)>) {
    let Command::Shell(text) = &r.command else {
        return (config::argv(&state.config, &r.command), None);
    };
    if r.heredocs.is_empty() {
        return (config::argv(&state.config, &r.command), None);
    }
    let only_heredoc = r.heredocs.len() == 1
        && text.split_whitespace().count() == 1
        && text
            .trim_start_matches(|c: char| c.is_ascii_digit())
            .starts_with("<<");
    let mut shell = config::shell(&state.config);
    if only_heredoc {
        let doc = &r.heredocs[0];
        if doc.content.starts_with("#!") {
            let target = format!("/dev/pipes/{}", doc.name);
            return (vec![target.clone()], Some((target, doc.content.clone())));
        }
        shell.push(doc.content.clone());
        return (shell, None);
    }
    let mut full = text.clone();
    for doc in &r.heredocs {
        full.push('\n');
        full.push_str(&doc.content);
        full.push_str(&doc.name);
    }
    shell.push(full);
    (shell, None)
}

/// The history line BuildKit writes for a RUN: build args in scope, then the command.
pub fn created_by(state: &StageState, step: &Step, r: &Run) -> String {
    let (argv, _) = run_argv(state, r);
    let args_text = if step.args.is_empty() {
        String::new()
    } else {
        let kv: Vec<String> = step.args.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!("|{} {} ", kv.len(), kv.join(" "))
    };
    format!("RUN {args_text}{} # buildkit", argv.join(" "))
}

pub fn run(
    state: &mut StageState,
    step: &Step,
    r: &Run,
    env: &Env,
    progress_id: usize,
    graph: &Graph,
    created_by: String,
) -> Result<Option<LayerRef>> {
    let (argv, script) = run_argv(state, r);
    let mut mounts = Vec::new();
    // Closed for writing before it runs: an open writer makes exec fail (ETXTBSY).
    let _script_file = match script {
        None => None,
        Some((target, body)) => {
            let mut file = tempfile::Builder::new()
                .prefix("rbuild-heredoc-")
                .tempfile()?;
            file.write_all(body.as_bytes())?;
            std::fs::set_permissions(
                file.path(),
                std::os::unix::fs::PermissionsExt::from_mode(0o755),
            )?;
            let path = file.into_temp_path();
            mounts.push(ExtraMount::Bind {
                source: path.to_path_buf(),
                target,
                readonly: true,
            });
            Some(path)
        }
    };
    let prepared = super::mounts::prepare(&r.mounts, env, graph)?;
    mounts.extend(prepared.mounts.iter().cloned());
    // ENV wins over ARG; proxy args reach the command without being declared.
    let mut vars = state.config.config.env.clone();
    let has = |vars: &[String], k: &str| {
        vars.iter()
            .any(|e| e.split_once('=').is_some_and(|(n, _)| n == k))
    };
    for (k, v) in &step.args {
        if !has(&vars, k) {
            vars.push(format!("{k}={v}"));
        }
    }
    vars.extend(prepared.env.iter().cloned());
    for k in PROXY_ARGS {
        if let Some(v) = env.opts.build_args.get(k) {
            if !has(&vars, k) {
                vars.push(format!("{k}={v}"));
            }
        }
    }
    if r.security.as_deref() == Some("insecure") {
        bail!("RUN --security=insecure needs an entitlement (BuildKit's --allow security.insecure) that rbuild does not grant: drop the flag");
    }
    let network = match r.network.as_deref() {
        Some("none") => Network::None,
        Some("host") => Network::Host,
        _ => env.opts.network,
    };
    in_sandbox(
        state,
        env,
        argv,
        vars,
        network,
        mounts,
        progress_id,
        created_by,
    )
}

/// WORKDIR: the directory is made by the sandbox inside the root, owned by the step's user.
pub fn make_workdir(
    state: &mut StageState,
    env: &Env,
    created_by: String,
) -> Result<Option<LayerRef>> {
    let vars = state.config.config.env.clone();
    in_sandbox(
        state,
        env,
        vec![],
        vars,
        Network::None,
        vec![],
        super::progress::SILENT,
        created_by,
    )
}

#[allow(clippy::too_many_arguments)]
fn in_sandbox(
    state: &mut StageState,
    env: &Env,
    argv: Vec<String>,
    vars: Vec<String>,
    network: Network,
    mounts: Vec<ExtraMount>,
    progress_id: usize,
    created_by: String,
) -> Result<Option<LayerRef>> {
    let area = env.snapshots.step_area()?;
    let lowers = state.mount_step(env, &area)?;
    let merged = area.merged();
    let user = crate::exec::users::resolve_user(&merged, &state.config.config.user)
        .with_context(|| format!("USER {}", state.config.config.user));
    let outcome = user.and_then(|user| {
        let cwd = state.workdir();
        let targets: Vec<String> = mounts
            .iter()
            .map(|m| match m {
                ExtraMount::Bind { target, .. } | ExtraMount::Tmpfs { target, .. } => {
                    target.clone()
                }
            })
            .collect();
        // Docker sets HOME from the user's passwd entry when the image does not.
        let mut vars = vars;
        if !vars.iter().any(|e| e.starts_with("HOME=")) {
            vars.push(format!(
                "HOME={}",
                user.home.clone().unwrap_or_else(|| "/".to_string())
            ));
        }
        let spec = Spec {
            root: merged.clone(),
            argv: argv.clone(),
            env: vars,
            cwd,
            uid: user.uid,
            gid: user.gid,
            groups: user.groups,
            hostname: "rbuild".to_string(),
            network,
            mounts,
        };
        let mut tail: VecDeque<String> = VecDeque::new();
        let mut partial = Vec::new();
        let exit = sandbox::run(&spec, &mut |bytes| {
            env.progress.log(progress_id, bytes);
            partial.extend_from_slice(bytes);
            while let Some(nl) = partial.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = partial.drain(..=nl).collect();
                tail.push_back(String::from_utf8_lossy(&line).trim_end().to_string());
                if tail.len() > TAIL_LINES {
                    tail.pop_front();
                }
            }
        })?;
        if !partial.is_empty() {
            tail.push_back(String::from_utf8_lossy(&partial).into_owned());
        }
        Ok((exit, tail, targets))
    });
    StageState::unmount(&merged)?;
    let (exit, tail, targets) = outcome?;
    if exit != Exit::Code(0) {
        let how = match exit {
            Exit::Code(c) => format!("exit code {c}"),
            Exit::Signal(s) => format!("killed by signal {s}"),
        };
        let shown: Vec<String> = tail.into_iter().collect();
        bail!(
            "process {argv:?} did not complete successfully: {how}\n{}",
            if shown.is_empty() {
                "(no output)".to_string()
            } else {
                shown.join("\n")
            }
        );
    }
    let target_refs: Vec<&str> = targets.iter().map(String::as_str).collect();
    sandbox::remove_created_mount_points(&area.upper(), &lowers, &target_refs);
    state.commit(&area, env, created_by)
}
