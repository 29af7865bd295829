//! `rbuild parse`: the parsed Dockerfile, as our JSON (syntax tree with spans and the resolved
//! plan) or exactly as BuildKit's parser `Node.Dump()` prints it.

use super::VarArgs;
use crate::frontend::{self, lint};
use crate::plan::{self, PlanOptions};
use anyhow::Result;
use clap::{Args, ValueEnum};
use std::process::ExitCode;

#[derive(Args)]
pub struct ParseArgs {
    /// The Dockerfile to read (`-` for standard input).
    #[arg(short = 'f', long = "file", default_value = "Dockerfile")]
    pub file: String,
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    #[command(flatten)]
    pub vars: VarArgs,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// Our syntax tree with source spans, and the resolved build plan.
    Json,
    /// BuildKit's `Node.Dump()` format, line for line.
    Buildkit,
}

/// Reads a Dockerfile from a path or `-`.
pub fn read_dockerfile(file: &str) -> Result<String> {
    use anyhow::Context;
    let bytes = if file == "-" {
        let mut buf = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut buf)?;
        buf
    } else {
        std::fs::read(file).with_context(|| format!("cannot read Dockerfile {file}"))?
    };
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

pub fn run(args: ParseArgs) -> Result<ExitCode> {
    let source = read_dockerfile(&args.file)?;
    let name = if args.file == "-" {
        "Dockerfile"
    } else {
        &args.file
    };
    match args.format {
        Format::Buildkit => match frontend::parse(name, &source) {
            Ok(raw) => {
                for node in &raw.nodes {
                    println!("{}", node.dump());
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
        Format::Json => match load(name, &source, &args.vars) {
            Ok(loaded) => {
                eprint!("{}", loaded.render_warnings());
                println!("{}", loaded.to_json());
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => {
                eprintln!("{e}");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}

/// A Dockerfile parsed, checked and planned, with the warnings that survive `# check=`.
pub struct Loaded {
    pub dockerfile: frontend::Dockerfile,
    pub plan: plan::Plan,
    pub warnings: Vec<frontend::Diagnostic>,
}

/// Parses, plans and lints; any error (including warnings under `check=error=true`) fails.
pub fn load(name: &str, source: &str, vars: &VarArgs) -> Result<Loaded, frontend::ParseError> {
    let opts = PlanOptions {
        build_args: vars.build_args(),
        target: vars.target.clone(),
        ..PlanOptions::default()
    };
    load_with(name, source, &opts, &|_| None)
}

/// [`load`] with base images looked up (their ENV and ONBUILD feed the plan).
pub fn load_with(
    name: &str,
    source: &str,
    opts: &PlanOptions,
    lookup: plan::BaseLookup,
) -> Result<Loaded, frontend::ParseError> {
    let dockerfile = frontend::parse_dockerfile(name, source)?;
    let plan = plan::plan(&dockerfile, opts, lookup)?;
    let mut warnings = dockerfile.warnings.clone();
    warnings.extend(plan.warnings.iter().cloned());
    let warnings = lint::apply_check_directive(dockerfile.directives.check.as_deref(), warnings)
        .map_err(|diagnostics| frontend::ParseError {
            file: name.to_string(),
            source: source.to_string(),
            diagnostics,
        })?;
    Ok(Loaded {
        dockerfile,
        plan,
        warnings,
    })
}

impl Loaded {
    pub fn render_warnings(&self) -> String {
        let df = &self.dockerfile;
        self.warnings
            .iter()
            .map(|w| w.render(&df.file, &df.source) + "\n")
            .collect()
    }

    /// The JSON document `rbuild parse` prints.
    pub fn to_json(&self) -> String {
        let df = &self.dockerfile;
        let doc = serde_json::json!({
            "file": df.file,
            "directives": df.directives,
            "instructions": df.instructions,
            "stages": self.plan.stages,
            "target": self.plan.target,
            "order": self.plan.order,
            "warnings": self.warnings,
        });
        serde_json::to_string_pretty(&doc).expect("plan serializes")
    }
}
