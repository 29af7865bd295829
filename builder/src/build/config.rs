//! Steps that only change the image config, and the history text BuildKit writes for them.

use super::state::StageState;
use crate::frontend::instruction::{Command, Instruction};
use images::model::EmptyObject;
use images::HealthConfig;
use std::path::Path;

const DEFAULT_SHELL: [&str; 2] = ["/bin/sh", "-c"];

/// The shell a shell-form command runs through: SHELL, else `/bin/sh -c`.
pub fn shell(config: &images::ImageConfig) -> Vec<String> {
    if config.config.shell.is_empty() {
        DEFAULT_SHELL.iter().map(|s| s.to_string()).collect()
    } else {
        config.config.shell.clone()
    }
}

/// A command as the image runs it: exec form as is, shell form through the shell.
pub fn argv(config: &images::ImageConfig, command: &Command) -> Vec<String> {
    match command {
        Command::Exec(words) => words.clone(),
        Command::Shell(text) => {
            let mut argv = shell(config);
            argv.push(text.clone());
            argv
        }
    }
}

/// WORKDIR's path, relative ones resolved against the current working directory.
pub fn workdir(config: &images::ImageConfig, path: &str) -> String {
    let base = if config.config.working_dir.is_empty() {
        "/"
    } else {
        &config.config.working_dir
    };
    let joined = Path::new(base).join(path);
    // Lexical clean: `..` and `.` are resolved as Go's path.Clean does.
    let mut parts: Vec<&str> = Vec::new();
    for part in joined.to_str().unwrap_or(path).split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    format!("/{}", parts.join("/"))
}

/// Go's `%q` of a string slice, as BuildKit prints commands in history.
fn quoted(words: &[String]) -> String {
    let inner: Vec<String> = words
        .iter()
        .map(|w| crate::frontend::node::go_quote(w))
        .collect();
    format!("[{}]", inner.join(" "))
}

/// Applies a config-only instruction; returns its history `created_by`.
pub fn apply(state: &mut StageState, instruction: &Instruction) -> String {
    let config = &mut state.config;
    let c = &mut config.config;
    match instruction {
        Instruction::Env { pairs, .. } => {
            for kv in pairs {
                // Docker overrides a variable where it stands, keeping the order.
                let prefix = format!("{}=", kv.key);
                let entry = format!("{}={}", kv.key, kv.value);
                match c.env.iter_mut().find(|e| e.starts_with(&prefix)) {
                    Some(existing) => *existing = entry,
                    None => c.env.push(entry),
                }
            }
            let text: Vec<String> = pairs
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect();
            format!("ENV {}", text.join(" "))
        }
        Instruction::Label { pairs, .. } => {
            for kv in pairs {
                c.labels.insert(kv.key.clone(), kv.value.clone());
            }
            let text: Vec<String> = pairs
                .iter()
                .map(|kv| format!("{}={}", kv.key, kv.value))
                .collect();
            format!("LABEL {}", text.join(" "))
        }
        Instruction::Expose { ports } => {
            let mut added = Vec::new();
            for port in ports {
                let key = if port.contains('/') {
                    port.to_ascii_lowercase()
                } else {
                    format!("{port}/tcp")
                };
                c.exposed_ports.insert(key.clone(), EmptyObject {});
                added.push(format!("{key}:{{}}"));
            }
            format!("EXPOSE map[{}]", added.join(" "))
        }
        Instruction::Volume { paths } => {
            for p in paths {
                c.volumes.insert(p.clone(), EmptyObject {});
            }
            format!("VOLUME {}", quoted(paths))
        }
        Instruction::User { user } => {
            c.user = user.clone();
            format!("USER {user}")
        }
        Instruction::Cmd { command } => {
            let argv = argv(config, command);
            config.config.cmd = Some(argv.clone());
            state.cmd_set = true;
            format!("CMD {}", quoted(&argv))
        }
        Instruction::Entrypoint { command } => {
            let argv = argv(config, command);
            config.config.entrypoint = Some(argv.clone());
            if !state.cmd_set {
                // Docker's rule: a new ENTRYPOINT drops the base's CMD.
                config.config.cmd = None;
            }
            format!("ENTRYPOINT {}", quoted(&argv))
        }
        Instruction::Shell { shell } => {
            c.shell = shell.clone();
            format!("SHELL {}", quoted(shell))
        }
        Instruction::Healthcheck(h) => {
            c.healthcheck = Some(HealthConfig {
                test: h.test.clone(),
                interval: h.interval_ns.unwrap_or(0) as i64,
                timeout: h.timeout_ns.unwrap_or(0) as i64,
                start_period: h.start_period_ns.unwrap_or(0) as i64,
                start_interval: h.start_interval_ns.unwrap_or(0) as i64,
                retries: i64::from(h.retries.unwrap_or(0)),
            });
            format!("HEALTHCHECK {}", quoted(&h.test))
        }
        Instruction::Stopsignal { signal } => {
            c.stop_signal = signal.clone();
            format!("STOPSIGNAL {signal}")
        }
        Instruction::Onbuild { trigger } => {
            c.on_build.push(trigger.clone());
            format!("ONBUILD {trigger}")
        }
        Instruction::Maintainer { name } => {
            config.author = Some(name.clone());
            format!("MAINTAINER {name}")
        }
        Instruction::Arg { args } => {
            let names: Vec<String> = args
                .iter()
                .map(|a| match &a.default {
                    Some(d) => format!("{}={d}", a.name),
                    None => a.name.clone(),
                })
                .collect();
            format!("ARG {}", names.join(" "))
        }
        Instruction::From(_)
        | Instruction::Run(_)
        | Instruction::Copy(_)
        | Instruction::Add(_)
        | Instruction::Workdir { .. } => {
            unreachable!("not a config-only instruction")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workdir_resolution() {
        let mut c = images::ImageConfig::default();
        assert_eq!(workdir(&c, "app"), "/app");
        c.config.working_dir = "/srv".into();
        assert_eq!(workdir(&c, "app/../web/."), "/srv/web");
        assert_eq!(workdir(&c, "/abs"), "/abs");
    }
}
