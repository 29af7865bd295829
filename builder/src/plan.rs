//! The build planner: splits a Dockerfile into stages, resolves ARG scoping (global ARGs only
//! in FROM unless re-declared, `--build-arg` overrides, predefined proxy and platform args, ENV
//! winning over ARG), expands the instructions BuildKit expands, links stages (`FROM <stage>`,
//! `COPY --from`, `RUN --mount from=`), picks the target and the stages it needs, and inserts
//! a base image's ONBUILD triggers.

use crate::frontend::diagnostic::{Diagnostic, ParseError};
use crate::frontend::instruction::{self, ArgDecl, Copy, Instruction, KeyValue, Located};
use crate::frontend::mount::{expand_spec, parse_mount};
use crate::frontend::shell::{Env, Lexer};
use crate::frontend::{parser, Dockerfile, Span};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Proxy args usable in RUN without being declared; never in the cache key or history.
pub const PROXY_ARGS: [&str; 10] = [
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What the planner needs to know about a base image.
#[derive(Debug, Clone, Default)]
pub struct BaseImage {
    pub env: Vec<(String, String)>,
    pub onbuild: Vec<String>,
}

/// Looks up base images by reference; `None` when unknown (planning without a store).
pub type BaseLookup<'a> = &'a dyn Fn(&str) -> Option<BaseImage>;

#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub build_args: BTreeMap<String, String>,
    pub target: Option<String>,
    /// `os/arch[/variant]` being built for, and the one building.
    pub target_platform: String,
    pub build_platform: String,
}

impl Default for PlanOptions {
    fn default() -> Self {
        let host = host_platform();
        PlanOptions {
            build_args: BTreeMap::new(),
            target: None,
            target_platform: host.clone(),
            build_platform: host,
        }
    }
}

pub fn host_platform() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "arm" => "arm/v7",
        "x86" => "386",
        other => other,
    };
    format!("linux/{arch}")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", content = "ref", rename_all = "lowercase")]
pub enum Base {
    Scratch,
    Image(String),
    Stage(usize),
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub span: Span,
    /// The instruction text as written, for history and errors.
    pub original: String,
    /// The instruction with variables expanded where Docker expands them.
    pub instruction: Instruction,
    /// Declared build args in scope and their values: RUN's extra environment and part of the
    /// cache key.
    pub args: Vec<(String, String)>,
    /// True for steps inserted from the base image's ONBUILD triggers.
    pub from_onbuild: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Stage {
    pub index: usize,
    pub name: Option<String>,
    pub base: Base,
    pub platform: Option<String>,
    pub span: Span,
    pub steps: Vec<Step>,
    /// Stages this one reads from (base, COPY --from, RUN --mount from=).
    pub deps: BTreeSet<usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub stages: Vec<Stage>,
    pub target: usize,
    /// The stages the target needs, dependencies first.
    pub order: Vec<usize>,
    pub warnings: Vec<Diagnostic>,
}

struct Scope<'a> {
    env: &'a [(String, String)],
    args: &'a BTreeMap<String, Option<String>>,
}

impl Env for Scope<'_> {
    fn get(&self, name: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .or_else(|| self.args.get(name).and_then(|v| v.as_deref()))
    }
}

/// What a stage has accumulated while its instructions are planned.
#[derive(Clone, Default)]
struct StageState {
    env: Vec<(String, String)>,
    /// ARGs declared in the stage; `None` when declared without a value.
    args: BTreeMap<String, Option<String>>,
    /// ONBUILD triggers this stage records for stages built on it.
    onbuild: Vec<String>,
}

struct Planner<'a> {
    lexer: Lexer,
    opts: &'a PlanOptions,
    lookup: BaseLookup<'a>,
    warnings: Vec<Diagnostic>,
    errors: Vec<Diagnostic>,
    used_args: BTreeSet<String>,
}

/// Plans a parsed Dockerfile.
pub fn plan(df: &Dockerfile, opts: &PlanOptions, lookup: BaseLookup) -> Result<Plan, ParseError> {
    let mut p = Planner {
        lexer: Lexer::new(df.escape()),
        opts,
        lookup,
        warnings: Vec::new(),
        errors: Vec::new(),
        used_args: BTreeSet::new(),
    };
    let plan = p.run(df);
    if !p.errors.is_empty() {
        p.errors.sort_by_key(|d| d.span.start_line);
        return Err(ParseError {
            file: df.file.clone(),
            source: df.source.clone(),
            diagnostics: p.errors,
        });
    }
    let mut plan = plan.expect("no errors means a plan");
    let unused: Vec<&String> = opts
        .build_args
        .keys()
        .filter(|k| !p.used_args.contains(*k) && !PROXY_ARGS.contains(&k.as_str()))
        .collect();
    if !unused.is_empty() {
        p.warnings.push(Diagnostic::warning(
            "UnusedBuildArg",
            Span::default(),
            format!("one or more build-args {unused:?} were not consumed"),
        ));
    }
    plan.warnings = p.warnings;
    Ok(plan)
}

impl Planner<'_> {
    fn platform_args(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (prefix, platform) in [
            ("TARGET", &self.opts.target_platform),
            ("BUILD", &self.opts.build_platform),
        ] {
            let mut parts = platform.splitn(3, '/');
            out.push((format!("{prefix}PLATFORM"), platform.clone()));
            out.push((
                format!("{prefix}OS"),
                parts.next().unwrap_or("").to_string(),
            ));
            out.push((
                format!("{prefix}ARCH"),
                parts.next().unwrap_or("").to_string(),
            ));
            out.push((
                format!("{prefix}VARIANT"),
                parts.next().unwrap_or("").to_string(),
            ));
        }
        out
    }

    fn expand(&mut self, word: &str, env: &Scope, span: Span) -> String {
        match self.lexer.process_word_with_unset(word, env) {
            Ok((value, unset)) => {
                for name in unset {
                    if env.args.contains_key(&name) {
                        continue;
                    }
                    let known = env.env.iter().map(|(k, _)| k).chain(env.args.keys());
                    let hint = known
                        .map(|k| (instruction::edit_distance(&name, k), k))
                        .filter(|(d, _)| *d <= 2)
                        .min()
                        .map(|(_, k)| format!(" (did you mean ${k}?)"))
                        .unwrap_or_default();
                    self.warnings.push(Diagnostic::warning(
                        "UndefinedVar",
                        span,
                        format!("usage of undefined variable '${name}'{hint}"),
                    ));
                }
                value
            }
            Err(e) => {
                self.errors.push(Diagnostic::error(span, e.to_string()));
                String::new()
            }
        }
    }

    fn run(&mut self, df: &Dockerfile) -> Option<Plan> {
        // Global scope: ARGs before the first FROM, plus the automatic platform args.
        let mut meta: BTreeMap<String, Option<String>> = self
            .platform_args()
            .into_iter()
            .map(|(k, v)| (k, Some(v)))
            .collect();
        let mut meta_no_default: BTreeSet<String> = BTreeSet::new();
        let mut iter = df.instructions.iter().peekable();
        while let Some(located) = iter.next_if(|l| matches!(l.instruction, Instruction::Arg { .. }))
        {
            let Instruction::Arg { args } = &located.instruction else {
                unreachable!()
            };
            for ArgDecl { name, default } in args {
                let value = self.arg_value(name, default.as_deref(), &meta, &[], located.span);
                if value.is_none() {
                    meta_no_default.insert(name.clone());
                }
                meta.insert(name.clone(), value);
            }
        }

        let mut stages: Vec<Stage> = Vec::new();
        let mut states: Vec<StageState> = Vec::new();
        for located in iter {
            let Instruction::From(from) = &located.instruction else {
                if let (Some(stage), Some(state)) = (stages.last_mut(), states.last_mut()) {
                    self.add_step(stage, state, &meta, located, false);
                }
                continue;
            };
            let scope = Scope {
                env: &[],
                args: &meta,
            };
            let image = self.expand(&from.image, &scope, located.span);
            for name in &meta_no_default {
                if from.image.contains(&format!("${name}"))
                    || from.image.contains(&format!("${{{name}"))
                {
                    self.warnings.push(Diagnostic::warning(
                        "InvalidDefaultArgInFrom",
                        located.span,
                        format!("default value for ARG {name} results in empty or invalid base image name"),
                    ));
                }
            }
            let platform = from
                .platform
                .as_ref()
                .map(|p| self.expand(p, &scope, located.span));
            let by_name = stages
                .iter()
                .position(|s| s.name.as_deref() == Some(image.to_ascii_lowercase().as_str()));
            let (base, env, onbuild) = if let Some(i) = by_name {
                (
                    Base::Stage(i),
                    states[i].env.clone(),
                    states[i].onbuild.clone(),
                )
            } else if image.eq_ignore_ascii_case("scratch") {
                (Base::Scratch, Vec::new(), Vec::new())
            } else if image.is_empty() {
                self.errors.push(Diagnostic::error(
                    located.span,
                    format!("base name ({}) should not be blank: give the ARG a default or pass --build-arg", from.image),
                ));
                (Base::Scratch, Vec::new(), Vec::new())
            } else {
                let found = (self.lookup)(&image).unwrap_or_default();
                (Base::Image(image), found.env, found.onbuild)
            };
            let mut stage = Stage {
                index: stages.len(),
                name: from.name.clone(),
                deps: by_name.into_iter().collect(),
                base,
                platform,
                span: located.span,
                steps: Vec::new(),
            };
            let mut state = StageState {
                env,
                ..StageState::default()
            };
            // The base's triggers run first, as if written right after FROM.
            for trigger in onbuild {
                match parse_trigger(&trigger, df.escape(), located.span) {
                    Ok(t) => self.add_step(&mut stage, &mut state, &meta, &t, true),
                    Err(e) => self.errors.push(Diagnostic::error(
                        located.span,
                        format!("ONBUILD trigger {trigger:?} of the base image: {e}"),
                    )),
                }
            }
            stages.push(stage);
            states.push(state);
        }
        if stages.is_empty() {
            return None;
        }
        self.link_stages(&mut stages);
        let target = match &self.opts.target {
            None => stages.len() - 1,
            Some(t) => match stages
                .iter()
                .position(|s| s.name.as_deref() == Some(t.to_ascii_lowercase().as_str()))
            {
                Some(i) => i,
                None => {
                    let names: Vec<&str> =
                        stages.iter().filter_map(|s| s.name.as_deref()).collect();
                    self.errors.push(Diagnostic::error(
                        Span::default(),
                        format!(
                            "target stage {t:?} could not be found (stages: {})",
                            names.join(", ")
                        ),
                    ));
                    return None;
                }
            },
        };
        let order = self.order(&stages, target)?;
        Some(Plan {
            stages,
            target,
            order,
            warnings: Vec::new(),
        })
    }

    /// An ARG's value: `--build-arg` first, then the default, then (for a re-declared global
    /// ARG) the global value.
    fn arg_value(
        &mut self,
        name: &str,
        default: Option<&str>,
        args: &BTreeMap<String, Option<String>>,
        env: &[(String, String)],
        span: Span,
    ) -> Option<String> {
        if let Some(v) = self.opts.build_args.get(name) {
            self.used_args.insert(name.to_string());
            return Some(v.clone());
        }
        default.map(|d| self.expand(d, &Scope { env, args }, span))
    }

    fn add_step(
        &mut self,
        stage: &mut Stage,
        state: &mut StageState,
        meta: &BTreeMap<String, Option<String>>,
        located: &Located,
        from_onbuild: bool,
    ) {
        let span = located.span;
        let env = state.env.clone();
        let args = state.args.clone();
        let scope = Scope {
            env: &env,
            args: &args,
        };
        let expand = |p: &mut Self, w: &str| p.expand(w, &scope, span);
        let instruction = match &located.instruction {
            Instruction::Arg { args: decls } => {
                for ArgDecl { name, default } in decls {
                    let value = self
                        .arg_value(name, default.as_deref(), &state.args, &env, span)
                        .or_else(|| meta.get(name).cloned().flatten());
                    state.args.insert(name.clone(), value);
                }
                located.instruction.clone()
            }
            Instruction::Env { pairs, legacy } => {
                // Every value sees the variables as they were before this instruction.
                let pairs: Vec<KeyValue> = pairs
                    .iter()
                    .map(|kv| KeyValue {
                        key: expand(self, &kv.key),
                        value: expand(self, &kv.value),
                    })
                    .collect();
                for kv in &pairs {
                    state.env.retain(|(k, _)| *k != kv.key);
                    state.env.push((kv.key.clone(), kv.value.clone()));
                }
                Instruction::Env {
                    pairs,
                    legacy: *legacy,
                }
            }
            Instruction::Label { pairs, legacy } => Instruction::Label {
                pairs: pairs
                    .iter()
                    .map(|kv| KeyValue {
                        key: expand(self, &kv.key),
                        value: expand(self, &kv.value),
                    })
                    .collect(),
                legacy: *legacy,
            },
            Instruction::Copy(c) => Instruction::Copy(self.expand_copy(c, &|p, w| expand(p, w))),
            Instruction::Add(c) => Instruction::Add(self.expand_copy(c, &|p, w| expand(p, w))),
            Instruction::Expose { ports } => Instruction::Expose {
                ports: ports.iter().map(|p| expand(self, p)).collect(),
            },
            Instruction::Volume { paths } => Instruction::Volume {
                paths: paths.iter().map(|p| expand(self, p)).collect(),
            },
            Instruction::User { user } => Instruction::User {
                user: expand(self, user),
            },
            Instruction::Workdir { path } => Instruction::Workdir {
                path: expand(self, path),
            },
            Instruction::Stopsignal { signal } => {
                let signal = expand(self, signal);
                if !valid_signal(&signal) {
                    self.errors.push(Diagnostic::error(
                        span,
                        format!("invalid signal {signal:?}: use a name such as SIGTERM or a number from 1 to 64"),
                    ));
                }
                Instruction::Stopsignal { signal }
            }
            Instruction::Run(run) => {
                let mut run = run.clone();
                run.network = run.network.map(|n| expand(self, &n));
                let expand_value = |v: &str| {
                    self.lexer
                        .process_word(v, &scope)
                        .map_err(|e| e.to_string())
                };
                let mut expanded = Vec::new();
                for m in &run.mounts {
                    match expand_spec(m, &expand_value)
                        .and_then(|e| parse_mount(&e, &|v| Ok(v.to_string())).map(|_| e))
                    {
                        Ok(e) => expanded.push(e),
                        Err(e) => self
                            .errors
                            .push(Diagnostic::error(span, format!("--mount={m}: {e}"))),
                    }
                }
                run.mounts = expanded;
                Instruction::Run(run)
            }
            Instruction::Onbuild { trigger } => {
                state.onbuild.push(trigger.clone());
                located.instruction.clone()
            }
            other => other.clone(),
        };
        stage.steps.push(Step {
            span,
            original: located.original.clone(),
            instruction,
            args: state
                .args
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), v.clone()?)))
                .collect(),
            from_onbuild,
        });
    }

    fn expand_copy(&mut self, c: &Copy, expand: &dyn Fn(&mut Self, &str) -> String) -> Copy {
        let heredoc_names: Vec<String> =
            c.heredocs.iter().map(|h| format!("<<{}", h.name)).collect();
        Copy {
            sources: c
                .sources
                .iter()
                .map(|s| {
                    if s.starts_with("<<") || heredoc_names.contains(s) {
                        s.clone()
                    } else {
                        expand(self, s)
                    }
                })
                .collect(),
            dest: expand(self, &c.dest),
            from: c.from.as_ref().map(|v| expand(self, v)),
            chown: c.chown.as_ref().map(|v| expand(self, v)),
            chmod: c.chmod.as_ref().map(|v| expand(self, v)),
            exclude: c.exclude.iter().map(|v| expand(self, v)).collect(),
            checksum: c.checksum.as_ref().map(|v| expand(self, v)),
            ..c.clone()
        }
    }

    /// Resolves `COPY --from` and `RUN --mount from=` against stage names and indexes.
    fn link_stages(&mut self, stages: &mut [Stage]) {
        let names: Vec<Option<String>> = stages.iter().map(|s| s.name.clone()).collect();
        for stage in stages.iter_mut() {
            let mut deps = Vec::new();
            for step in &stage.steps {
                let froms: Vec<String> = match &step.instruction {
                    Instruction::Copy(c) => c.from.iter().cloned().collect(),
                    Instruction::Run(r) => r
                        .mounts
                        .iter()
                        .filter_map(|m| parse_mount(m, &|v| Ok(v.to_string())).ok()?.from)
                        .collect(),
                    _ => Vec::new(),
                };
                for from in froms {
                    if let Some(i) = stage_ref(&names, &from) {
                        if i == stage.index {
                            self.errors.push(Diagnostic::error(
                                step.span,
                                format!("stage {from:?} cannot copy from itself"),
                            ));
                        } else {
                            deps.push(i);
                        }
                    } else if from.parse::<usize>().is_ok() {
                        self.errors.push(Diagnostic::error(
                            step.span,
                            format!("--from={from}: there is no stage with index {from} (stages are numbered from 0)"),
                        ));
                    }
                }
            }
            stage.deps.extend(deps);
        }
    }

    /// Depth-first order of the stages `target` needs; a cycle is an error.
    fn order(&mut self, stages: &[Stage], target: usize) -> Option<Vec<usize>> {
        fn visit(
            stages: &[Stage],
            i: usize,
            state: &mut [u8],
            out: &mut Vec<usize>,
        ) -> Result<(), usize> {
            match state[i] {
                2 => return Ok(()),
                1 => return Err(i),
                _ => {}
            }
            state[i] = 1;
            for &d in &stages[i].deps {
                visit(stages, d, state, out)?;
            }
            state[i] = 2;
            out.push(i);
            Ok(())
        }
        let mut state = vec![0u8; stages.len()];
        let mut out = Vec::new();
        match visit(stages, target, &mut state, &mut out) {
            Ok(()) => Some(out),
            Err(i) => {
                self.errors.push(Diagnostic::error(
                    stages[i].span,
                    "circular dependency between stages (COPY --from / FROM)",
                ));
                None
            }
        }
    }
}

/// A stage by name (case-insensitive) or index; anything else is an image reference.
pub fn stage_ref(names: &[Option<String>], from: &str) -> Option<usize> {
    let lower = from.to_ascii_lowercase();
    names
        .iter()
        .position(|n| n.as_deref() == Some(lower.as_str()))
        .or_else(|| from.parse::<usize>().ok().filter(|i| *i < names.len()))
}

/// Parses an ONBUILD trigger (possibly with heredoc bodies) as one instruction.
fn parse_trigger(trigger: &str, escape: char, span: Span) -> Result<Located, String> {
    let source = if escape == '`' {
        format!("# escape=`\n{trigger}\n")
    } else {
        format!("{trigger}\n")
    };
    let raw = parser::parse("ONBUILD", &source).map_err(|e| {
        e.diagnostics
            .iter()
            .map(|d| d.message.clone())
            .collect::<Vec<_>>()
            .join("; ")
    })?;
    let mut located = instruction::from_node(&raw.nodes[0])?;
    located.span = span;
    Ok(located)
}

/// Signal names Linux knows (`SIG` prefix optional), as STOPSIGNAL accepts them.
const SIGNALS: [&str; 31] = [
    "ABRT", "ALRM", "BUS", "CHLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT", "KILL", "PIPE",
    "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM", "TRAP", "TSTP", "TTIN",
    "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH",
];

fn valid_signal(s: &str) -> bool {
    if let Ok(n) = s.parse::<u32>() {
        return (1..=64).contains(&n);
    }
    let upper = s.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    SIGNALS.contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::parse_dockerfile;

    fn plan_with(src: &str, lookup: BaseLookup) -> Result<Plan, ParseError> {
        let df = parse_dockerfile("Dockerfile", src).unwrap();
        plan(&df, &PlanOptions::default(), lookup)
    }

    fn kinds(stage: &Stage) -> Vec<String> {
        stage.steps.iter().map(|s| s.original.clone()).collect()
    }

    #[test]
    fn base_image_env_and_onbuild_triggers() {
        let lookup = |r: &str| {
            (r == "base:1").then(|| BaseImage {
                env: vec![("HOME".into(), "/root".into())],
                onbuild: vec!["RUN echo trigger".into(), "COPY <<EOF /x\nbody\nEOF".into()],
            })
        };
        let p = plan_with("FROM base:1\nWORKDIR $HOME/app\n", &lookup).unwrap();
        let stage = &p.stages[0];
        assert_eq!(kinds(stage)[..2], ["RUN echo trigger", "COPY <<EOF /x"]);
        assert!(stage.steps[0].from_onbuild && !stage.steps[2].from_onbuild);
        let Instruction::Copy(c) = &stage.steps[1].instruction else {
            panic!()
        };
        assert_eq!(c.heredocs[0].content, "body\n");
        let Instruction::Workdir { path } = &stage.steps[2].instruction else {
            panic!()
        };
        assert_eq!(path, "/root/app", "base image ENV is visible to expansion");
    }

    #[test]
    fn stage_base_inherits_env_and_triggers_but_not_args() {
        let src =
            "FROM scratch AS a\nARG X=1\nENV E=e\nONBUILD RUN echo hi\nFROM a\nLABEL e=$E x=$X\n";
        let p = plan_with(src, &|_| None).unwrap();
        let b = &p.stages[1];
        assert_eq!(b.base, Base::Stage(0));
        assert_eq!(kinds(b), ["RUN echo hi", "LABEL e=$E x=$X"]);
        let Instruction::Label { pairs, .. } = &b.steps[1].instruction else {
            panic!()
        };
        assert_eq!(
            (pairs[0].value.as_str(), pairs[1].value.as_str()),
            ("e", "")
        );
        assert_eq!(p.order, [0, 1]);
    }

    #[test]
    fn signals() {
        assert!(valid_signal("SIGTERM") && valid_signal("term") && valid_signal("9"));
        assert!(!valid_signal("0") && !valid_signal("65") && !valid_signal("SIGNOPE"));
    }
}
